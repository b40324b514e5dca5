"""The sync kind with real ffmpeg on generated recordings of one scene: filtered, echoing,
noisy copies with different starts are placed within one frame; a silent angle and a
too-short one are reported, never guessed; exaggerated clock drift is measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ingest_media import angle, scene

FRAME = 1 / 30


@pytest.fixture
def recordings(roots: tuple[Path, Path], ffmpeg: str) -> dict[str, float]:
    """The angles in the media root; the syncOffset each must get against `cam1`."""
    media, _ = roots
    wav = scene(ffmpeg, media / "scene.wav", 52.0)
    ref_start = 2.0
    specs = {
        # id: (start in the scene, seconds, chain, noise)
        "cam1": (ref_start, 40.0, "anull", 0.01),
        "cam2": (7.3, 40.0, "highpass=f=300,lowpass=f=3000,volume=0.3", 0.02),
        "phone": (0.55, 36.0, "aecho=0.8:0.5:35:0.4,lowpass=f=5000", 0.03),
        "drifty": (3.0, 40.0, "asetrate=48048,aresample=48000", 0.01),
    }
    expected = {}
    for name, (start, seconds, chain, noise) in specs.items():
        angle(ffmpeg, wav, media / f"{name}.mp4", start=start, seconds=seconds, chain=chain,
              noise=noise)  # fmt: skip
        expected[name] = ref_start - start
    angle(ffmpeg, wav, media / "rec.m4a", start=4.1, seconds=45.0, chain="lowpass=f=2500",
          noise=0.02, video=False)  # fmt: skip
    expected["rec"] = ref_start - 4.1
    # A camera whose microphone was off, and one that ran for 5 s only.
    angle(ffmpeg, wav, media / "mute.mp4", start=1.0, seconds=20.0, chain="volume=0")
    angle(ffmpeg, wav, media / "short.mp4", start=20.0, seconds=5.0)
    return expected


def test_angles_placed_within_a_frame(run_kind, recordings) -> None:
    # Given four angles, a silent one, a short one and an external recorder of one scene
    ids = ["cam1", "cam2", "phone", "drifty", "mute", "short"]
    job = {
        "kind": "sync",
        "angles": [{"id": i, "source": f"{i}.mp4"} for i in ids],
        "externalAudio": {"id": "rec", "source": "rec.m4a"},
        "fps": 30,
    }
    # When they are synchronised
    ctx = run_kind(job)
    # Then each audible, overlapping angle gets its syncOffset within one frame
    result = json.loads((ctx.job_dir / "sync.json").read_text())
    by_id = {a["id"]: a for a in result["angles"]}
    assert [a["id"] for a in result["angles"]] == ids
    assert by_id["cam1"]["syncOffset"] == 0 and by_id["cam1"]["reason"] == "reference"
    for name in ("cam2", "phone"):
        got = by_id[name]
        assert got["placed"] and got["reason"] == "placed"
        assert got["syncOffset"] == pytest.approx(recordings[name], abs=FRAME), name
        assert got["syncOffset"] == pytest.approx(recordings[name], abs=0.005), name  # seen: 0.1 ms
        assert got["confidence"] > 0.5
        assert abs(got["drift"]["ppm"]) < 100 and not got["drift"]["exceedsFrame"]
    rec = result["externalAudio"]
    assert rec["placed"] and rec["syncOffset"] == pytest.approx(recordings["rec"], abs=FRAME)
    # a clock 1000 ppm fast: measured, and flagged (40 ms over the overlap > one frame)
    drift = by_id["drifty"]["drift"]
    assert drift["ppm"] == pytest.approx(-1000, abs=100)
    assert drift["exceedsFrame"]
    moved = drift["offsetAtEnd"] - drift["offsetAtStart"]
    span = drift["overlapEnd"] - drift["overlapStart"]
    assert moved == pytest.approx(-1e-3 * span, abs=0.005)
    # at the overlap's start the drifting angle is where it started
    assert drift["offsetAtStart"] - recordings["drifty"] == pytest.approx(
        -1e-3 * drift["overlapStart"], abs=FRAME
    )
    # never guessed: the silent and the too-short angle are not placed
    assert by_id["mute"] == by_id["mute"] | {"placed": False, "syncOffset": None,
                                              "reason": "silent"}  # fmt: skip
    assert by_id["short"]["placed"] is False and by_id["short"]["reason"] == "no_overlap"
    assert ctx.published[0].path == "sync.json"


def test_silent_reference_is_refused(run_kind, roots, ffmpeg) -> None:
    from spooler.errors import JobError

    media, _ = roots
    wav = scene(ffmpeg, media / "scene.wav", 12.0)
    angle(ffmpeg, wav, media / "mute.mp4", start=0.0, seconds=10.0, chain="volume=0")
    angle(ffmpeg, wav, media / "cam1.mp4", start=1.0, seconds=10.0)
    job = {"kind": "sync", "angles": [{"id": "mute", "source": "mute.mp4"},
                                      {"id": "cam1", "source": "cam1.mp4"}]}  # fmt: skip
    with pytest.raises(JobError) as info:
        run_kind(job)
    assert info.value.code == "unsupported_media" and "silent" in info.value.message


def test_sync_job_through_the_daemon(spool, make_daemon, ffmpeg) -> None:
    # Given two recordings of one scene in the daemon's media root
    wav = scene(ffmpeg, spool.media / "scene.wav", 24.0)
    angle(ffmpeg, wav, spool.media / "a.mp4", start=1.0, seconds=20.0)
    angle(ffmpeg, wav, spool.media / "b.m4a", start=3.5, seconds=20.0, video=False,
          chain="lowpass=f=3000", noise=0.02)  # fmt: skip
    make_daemon()
    # When a sync job is submitted
    spool.submit("sync1", {"kind": "sync", "minOverlapSeconds": 8,
                           "angles": [{"id": "a", "source": "a.mp4"},
                                      {"id": "b", "source": "b.m4a"}]})  # fmt: skip
    # Then it succeeds with sync.json as its output, b placed 2.5 s earlier than a
    status = spool.wait_final("sync1", timeout=60)
    assert status["state"] == "succeeded", status
    assert [o["path"] for o in status["outputs"]] == ["sync.json"]
    result = json.loads((spool.layout.job_dir("sync1") / "sync.json").read_text())
    assert result["angles"][1]["syncOffset"] == pytest.approx(-2.5, abs=FRAME)
    assert status["preflight"]["reference"] == "a"
