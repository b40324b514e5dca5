"""The pure ingest decisions, in milliseconds: peaks, upload names and readiness, frame
rate and size of a proxy, sync maths on synthetic signals, and the layering rule."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.ingest import syncmath
from spooler.ingest.proxyplan import decide_rate, nominal_rate, proxy_size
from spooler.ingest.uploads import judge_name, upload_ready
from spooler.ingest.waveform import peaks
from spooler.loader import load_job
from spooler.mediainfo import MediaInfo, VideoIndex, VideoPacket


@pytest.mark.parametrize("bits", [8, 16])
def test_peaks_are_min_max_per_pixel(bits: int) -> None:
    rng = np.random.default_rng(1)
    samples = rng.integers(-32768, 32768, size=1000, dtype=np.int16)
    out = peaks(samples, sample_rate=16000, pixels_per_second=100, bits=bits)
    assert (out["version"], out["samples_per_pixel"], out["length"]) == (2, 160, 7)
    for i in range(out["length"]):
        block = samples[i * 160 : (i + 1) * 160].astype(int)
        low, high = int(block.min()), int(block.max())
        if bits == 8:
            low, high = low // 256, high // 256
        assert out["data"][2 * i : 2 * i + 2] == [low, high]
    assert all(-128 <= v <= 127 for v in out["data"]) or bits == 16


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("up/cam1.mp4", True),
        ("up/IMG_0042.MOV", True),
        ("up/.cam1.mp4.Xy12", False),  # rsync
        ("up/cam1.mp4.part", False),  # Firefox
        ("up/cam1.mp4.crdownload", False),  # Chrome
        ("up/tus1.mp4", False),  # beside tus1.mp4.info
        ("up/notes.txt", False),
        ("up/-rf.mp4", False),
        ("up/a\nb.mp4", False),
    ],
)
def test_upload_names(name: str, ok: bool) -> None:
    assert judge_name(name, frozenset({"tus1.mp4.info"})).ok is ok


def test_upload_ready_needs_settled_and_no_writer() -> None:
    asked: list[int] = []

    def writer(answer: bool | None):  # type: ignore[no-untyped-def]
        return lambda: asked.append(1) or answer

    assert not upload_ready(unchanged_for=1, settle_seconds=5, writer_open=writer(False))
    assert asked == []  # the lease probe is not made before the file settled
    assert not upload_ready(unchanged_for=9, settle_seconds=5, writer_open=writer(True))
    assert upload_ready(unchanged_for=9, settle_seconds=5, writer_open=writer(False))
    assert upload_ready(unchanged_for=9, settle_seconds=5, writer_open=writer(None))  # NFS


def _index(pts: list[int], tb: Fraction, duration: int) -> VideoIndex:
    packets = tuple(VideoPacket(p, p, duration, i == 0) for i, p in enumerate(pts))
    return VideoIndex(tb, Fraction(0), packets)


def test_rate_of_constant_and_variable_sources() -> None:
    ntsc = _index([1001 * i for i in range(300)], Fraction(1, 30000), 1001)
    got = decide_rate(MediaInfo(10.0, "mov", fps=Fraction(30000, 1001)), ntsc)
    assert (got.rate, got.constant, got.frames) == (Fraction(30000, 1001), True, 300)
    assert got.duration == pytest.approx(300 * 1001 / 30000)
    # a phone: 30 fps with ±4 ms jitter and every 7th frame missing, 1/90000 time base
    pts = [round((i / 30 + 0.004 * np.sin(i * 1.3)) * 90000) for i in range(300) if i % 7 != 3]
    index = _index(pts, Fraction(1, 90000), 3000)
    phone = decide_rate(MediaInfo(10.0, "mov", fps=Fraction(28)), index)
    assert (phone.rate, phone.constant) == (Fraction(30), False)
    assert nominal_rate(1001 / 30000) == Fraction(30)  # a phone's 29.97 reading is 30
    assert nominal_rate(1 / 25.02) == Fraction(25)


def test_proxy_size_as_shown_never_upscaled() -> None:
    uhd = MediaInfo(1.0, "mov", video_codec="h264", width=3840, height=2160)
    assert proxy_size(uhd, 720) == (1280, 720)
    portrait = MediaInfo(1.0, "mov", video_codec="h264", width=1920, height=1080, rotation=90)
    assert proxy_size(portrait, 1080) == (1080, 1920)
    small = MediaInfo(1.0, "mov", video_codec="h264", width=640, height=360)
    assert proxy_size(small, 1080) == (640, 360)
    anamorphic = MediaInfo(1.0, "mov", video_codec="h264", width=1440, height=1080,
                           sar=Fraction(4, 3))  # fmt: skip
    assert proxy_size(anamorphic, 720) == (1280, 720)


def _scene(seconds: float, rate: int = 16000, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.01, int(seconds * rate)).astype(np.float32)
    for start in rng.uniform(0, seconds - 0.1, int(seconds * 2)):
        i = int(start * rate)
        x[i : i + 800] += rng.normal(0, 0.5, 800).astype(np.float32)
    return x


def test_place_synthetic_offsets() -> None:
    rate, scene = 16000, _scene(40)
    ref = scene[2 * rate : 32 * rate]
    other = scene[int(7.25 * rate) : 38 * rate] * 0.2  # started 5.25 s later, quieter
    found = syncmath.place(ref, other, rate, min_overlap=10)
    assert found.reason == "placed" and found.offset == pytest.approx(-5.25, abs=1e-3)
    assert abs(found.ppm) < 50
    silent = np.zeros(20 * rate, dtype=np.float32)
    assert syncmath.place(ref, silent, rate, min_overlap=10).reason == "silent"
    short = scene[10 * rate : 15 * rate]
    assert syncmath.place(ref, short, rate, min_overlap=10).reason == "no_overlap"
    unrelated = _scene(30, seed=9)
    assert syncmath.place(ref, unrelated, rate, min_overlap=10).reason == "ambiguous"


def test_pure_ingest_modules_load_no_shell() -> None:
    code = (
        "import sys\n"
        "import spooler.ingest.models, spooler.ingest.derived, spooler.ingest.proxyplan\n"
        "import spooler.ingest.waveform, spooler.ingest.syncmath, spooler.ingest.uploads\n"
        "bad = [m for m in ('av', 'spooler.media', 'spooler.ffmpeg', 'watchdog') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stale_temps_of_a_dead_attempt_are_removed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from spooler.ingest.proxy import STALE_SECONDS, remove_stale_temps

    old, fresh, kept = (
        tmp_path / ".tmp-proxy.mp4.ab",
        tmp_path / ".tmp-proxy.mp4.cd",
        tmp_path / "proxy.mp4",
    )
    for path in (old, fresh, kept):
        path.write_bytes(b"x")
    os.utime(old, (1000.0, 1000.0))
    os.utime(kept, (1000.0, 1000.0))
    remove_stale_temps(tmp_path, 1000.0 + STALE_SECONDS + 1)
    assert not old.exists() and fresh.exists() and kept.exists()


@pytest.mark.parametrize(
    "job",
    [
        {"kind": "proxy", "source": "https://h.example/a.mp4?X-Amz-Signature=secret"},
        {"kind": "sync", "angles": [{"id": "a", "source": "s3://bucket/secret.mp4"}]},
    ],
)
def test_ingest_jobs_take_local_sources_only_and_never_echo_a_url(job: dict[str, Any]) -> None:
    # Given a proxy or sync job naming a remote source (export jobs may; these read local
    # media and write beside it)
    raw = json.dumps(job).encode()
    # When it is loaded, it is rejected at parse time as source_path ...
    with pytest.raises(JobError) as caught:
        load_job(raw, Settings())
    assert caught.value.code == ErrorCode.INVALID_JOB
    text = json.dumps(caught.value.details) + caught.value.message
    assert "source_path" in text
    # ... and the error repeats no part of the URL
    assert "secret" not in text and "example" not in text
