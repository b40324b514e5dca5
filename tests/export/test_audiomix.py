"""Audio with real ffmpeg: an angle's ambient sound mixed under the external mic at its
gain, and one-pass loudness normalisation measured on the output (EBU R128)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from export_support import FakeContext
from mediagen import audio_onsets, make_burst_wav

from spooler.media import stream_ends

Run = Callable[..., tuple[FakeContext, Path]]
FAST = {"preset": "ultrafast"}


def integrated_loudness(ffmpeg: str, path: Path) -> float:
    done = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a",
         "-af", "ebur128=framelog=quiet", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = done.stderr[done.stderr.rindex("Summary:") :]
    match = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    assert match, summary
    return float(match[1])


def assert_av_sync(path: Path, seconds: float) -> None:
    ends = stream_ends(path)
    assert ends.video_end == pytest.approx(seconds, abs=1e-3)
    assert ends.audio_end is not None and abs(ends.audio_end - ends.video_end) < 1 / 30


@pytest.fixture
def mic(media_root: Path, ffmpeg: str) -> str:
    """A recorder with one burst at its 2.5 s; with offset 1.0 it sounds at timeline 1.5."""
    path = media_root / "mic-2.5.wav"
    if not path.exists():
        make_burst_wav(ffmpeg, media_root, at=2.5, seconds=6.0).rename(path)
    return path.name


def external(mic: str, **extra: Any) -> dict[str, Any]:
    return {
        "angles": [{"id": "cam1", "source": "red.mp4"}],
        "segments": [{"angle": "cam1", "start": 0, "end": 3.5}],
        "mode": "reencode",
        "output": FAST,
        "audio": {"mode": "external", "source": mic, "offset": 1.0, **extra},
    }


@pytest.mark.parametrize(
    ("gain", "onsets"), [(0.0, [0.0, 1.0, 1.5, 2.0, 3.0]), (-30.0, [1.5])]
)  # fmt: skip
def test_ambient_sound_is_mixed_under_the_mic_at_its_gain(
    run_export: Run, mic: str, gain: float, onsets: list[float]
) -> None:
    # Given the mic (burst at 1.5 s) and cam1's own sound (bursts at whole seconds, 0.5 peak)
    job = external(mic, ambient={"angle": "cam1", "gainDb": gain})
    ctx, out = run_export(job)
    # Then at 0 dB both are heard; at -30 dB cam1's bursts (0.016 peak) are under threshold
    assert [round(t, 2) for t in audio_onsets(out)] == onsets
    # Still exactly as long as the video, one ffmpeg pass
    assert_av_sync(out, 3.5)
    assert len(ctx.commands) == 1 and "amix=inputs=2:duration=first:normalize=0" in str(
        ctx.commands[0]
    )


@pytest.mark.parametrize("target", [-16.0, -23.0])
def test_loudness_is_normalised_to_the_target(
    run_export: Run, media_root: Path, ffmpeg: str, target: float
) -> None:
    # Given a quiet recording (pink noise around -35 LUFS), 6 s
    path = media_root / "quiet.wav"
    if not path.exists():
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
             "anoisesrc=c=pink:r=48000:a=0.02:d=6:seed=7", "-ac", "2", str(path)],
            check=True,
        )  # fmt: skip
    assert integrated_loudness(ffmpeg, path) < -30
    job = {**external(path.name), "audio": {"mode": "external", "source": path.name,
                                            "loudness": {"targetLufs": target}}}  # fmt: skip
    _, out = run_export(job)
    # Then the exported track measures within 1 LU of the target, and still ends with video
    assert abs(integrated_loudness(ffmpeg, out) - target) <= 1.0
    assert_av_sync(out, 3.5)


def test_loudness_keeps_the_timing(run_export: Run, mic: str) -> None:
    _, out = run_export(external(mic, loudness={"targetLufs": -16, "truePeak": -1}))
    assert [round(t, 2) for t in audio_onsets(out)] == [1.5]
    assert_av_sync(out, 3.5)


def test_copy_mode_encodes_audio_to_normalise_it(run_export: Run) -> None:
    # Given a job that copies video and would copy cam1's AAC as it is
    job = {
        "angles": [{"id": "cam1", "source": "red.mp4"}, {"id": "cam2", "source": "green.mp4"}],
        "segments": [
            {"angle": "cam1", "start": 0, "end": 2},
            {"angle": "cam2", "start": 2, "end": 3.5},
        ],
        "mode": "copy",
    }
    ctx, _ = run_export(job)
    assert ctx.preflight is not None and ctx.preflight["output"]["audio"] == "copied"
    # When loudness is asked for (master angle, then follow): the audio is encoded instead
    for audio in ({"mode": "angle"}, {"mode": "follow"}):
        ctx, out = run_export({**job, "audio": {**audio, "loudness": {"targetLufs": -20}}})
        assert ctx.preflight is not None and ctx.preflight["output"]["audio"] == "encoded"
        assert "loudnorm=I=-20:TP=-1.5:LRA=11" in str(ctx.commands[0])
        assert_av_sync(out, 3.5)
