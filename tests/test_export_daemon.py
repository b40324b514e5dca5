"""The export kind end to end through a real daemon: the demo's sample shoot, switch points,
preflight, cancel, and permanent source errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import Spool, pid_alive

from spooler.demo import demo_job, generate_media
from spooler.ffmpeg import find_ffmpeg


@pytest.fixture(scope="module")
def shoot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's three angles and mic, made once for this module."""
    folder = tmp_path_factory.mktemp("shoot")
    generate_media(find_ffmpeg(None), folder / "demo")
    return folder


def _job(spool: Spool, shoot: Path, **changes: Any) -> dict[str, Any]:
    shutil.copytree(shoot, spool.media, dirs_exist_ok=True)
    media = {p.stem: p for p in (spool.media / "demo").iterdir()}
    return {**demo_job(spool.media, media), **changes}


def test_switch_points_export_through_the_daemon(spool: Spool, make_daemon, shoot: Path) -> None:
    make_daemon()
    spool.submit("multicam", _job(spool, shoot))
    status = spool.wait_final("multicam", timeout=120)
    assert status["state"] == "succeeded", status.get("error")
    assert status["kind"] == "export"
    (output,) = status["outputs"]
    assert output["path"] == "demo-export.mp4"
    assert (output["width"], output["height"]) == (640, 360)
    assert abs(output["durationSeconds"] - 10.0) <= 1 / 30 + 1e-3
    preflight = status["preflight"]
    assert preflight["mode"] == "reencode"
    assert {a for a in preflight["angles"]} >= {"wide", "close", "side"}
    log = spool.layout.log_file("multicam").read_text()
    assert "-protocol_whitelist" in log  # the exact argv, with its input restrictions
    assert spool.temp_leftovers() == []
    assert status["metadata"]["demo"] is True


def test_cancel_stops_a_running_export(spool: Spool, make_daemon, shoot: Path) -> None:
    make_daemon()
    job = _job(spool, shoot)
    job["output"] = {**job["output"], "preset": "veryslow"}  # long enough to catch running
    spool.submit("long-export", job)
    spool.wait_state("long-export", "running", timeout=60)
    spool.wait_for("long-export", lambda s: s["step"] is not None, timeout=60)
    (spool.layout.inbox / "long-export.cancel").touch()
    status = spool.wait_final("long-export", timeout=10)
    assert status["state"] == "cancelled"
    pids = [int(line.split()[-1]) for line in spool.layout.log_file("long-export").read_text()
            .splitlines() if line.startswith("# ffmpeg pid")]  # fmt: skip
    assert pids and not any(pid_alive(pid) for pid in pids)
    assert status["outputs"] == [] and spool.temp_leftovers() == []


@pytest.mark.parametrize(
    ("source", "code"),
    [("demo/missing.mp4", "source_missing"), ("demo/outside.mp4", "source_not_allowed")],
)
def test_source_problems_fail_at_once_without_retry(
    spool: Spool, make_daemon, shoot: Path, tmp_path: Path, source: str, code: str
) -> None:
    job = _job(spool, shoot)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"CANARY-7c1e" * 100)
    (spool.media / "demo" / "outside.mp4").symlink_to(secret)  # a link leaving the root
    job["angles"][1] = {**job["angles"][1], "source": source}
    make_daemon()
    spool.submit("bad-source", job)
    status = spool.wait_final("bad-source", timeout=60)
    assert status["state"] == "failed"
    assert status["error"]["code"] == code
    assert status["attempt"] == 1  # permanent: not retried
    assert "close" in json.dumps(status["error"]) or source in status["error"]["message"]
    for path in spool.root.rglob("*"):
        if path.is_file():
            assert b"CANARY-7c1e" not in path.read_bytes(), path


def _smart_job(spool: Spool, shoot: Path, preset: str) -> dict[str, Any]:
    job = _job(spool, shoot, mode="smart")
    job["output"] = {**job["output"], "size": {"mode": "keep"}, "preset": preset}
    return job


def test_smart_export_through_the_daemon(spool: Spool, make_daemon, shoot: Path) -> None:
    make_daemon()
    spool.submit("smart", _smart_job(spool, shoot, "veryfast"))
    status = spool.wait_final("smart", timeout=120)
    assert status["state"] == "succeeded", status.get("error")
    preflight = status["preflight"]
    assert preflight["path"] == "smart", preflight["reason"]
    assert 0 < preflight["output"]["encodedFrames"] < preflight["output"]["frames"]
    (output,) = status["outputs"]
    assert abs(output["durationSeconds"] - 10.0) <= 1 / 30 + 1e-3
    log = spool.layout.log_file("smart").read_text()
    assert log.count("# ffmpeg pid") >= 2  # the audio and the cuts' encoders
    assert spool.temp_leftovers() == []


def test_cancel_stops_every_encoder_of_a_smart_render(
    spool: Spool, make_daemon, shoot: Path
) -> None:
    make_daemon()
    spool.submit("smart-cancel", _smart_job(spool, shoot, "veryslow"))
    spool.wait_for("smart-cancel", lambda s: (s.get("step") or "").startswith("encode"), timeout=60)
    (spool.layout.inbox / "smart-cancel.cancel").touch()
    status = spool.wait_final("smart-cancel", timeout=10)
    assert status["state"] == "cancelled"
    pids = [int(line.split()[-1]) for line in spool.layout.log_file("smart-cancel").read_text()
            .splitlines() if line.startswith("# ffmpeg pid")]  # fmt: skip
    assert len(pids) >= 2 and not any(pid_alive(pid) for pid in pids)
    assert status["outputs"] == [] and spool.temp_leftovers() == []


def test_renditions_poster_and_storyboard_are_all_in_the_status(
    spool: Spool, make_daemon, shoot: Path
) -> None:
    # Given the demo edit with a 180p rendition, an audio-only one, a poster and a storyboard
    job = _job(spool, shoot)
    job["output"] = {**job["output"], "preset": "ultrafast"}
    job["renditions"] = [
        {"name": "180p", "size": {"mode": "height", "height": 180}, "preset": "ultrafast"},
        {"name": "audio", "audioOnly": True},
    ]
    job["poster"] = {"width": 320}
    job["storyboard"] = {"interval": 2, "columns": 2, "width": 96}
    make_daemon()
    # When the daemon runs it
    spool.submit("deliverables", job)
    status = spool.wait_final("deliverables", timeout=120)
    # Then the status lists every output, each with its facts, all published
    assert status["state"] == "succeeded", status.get("error")
    outputs = {o["path"]: o for o in status["outputs"]}
    assert (
        list(outputs)
        == status["plannedOutputs"]
        == [
            "demo-export.mp4",
            "demo-export-180p.mp4",
            "demo-export-audio.m4a",
            "demo-export.poster.jpg",
            "demo-export.storyboard.jpg",
            "demo-export.storyboard.vtt",
        ]
    )
    facts = {p: (o["role"], o["width"], o["height"], o["mimeType"]) for p, o in outputs.items()}
    assert facts == {
        "demo-export.mp4": ("main", 640, 360, "video/mp4"),
        "demo-export-180p.mp4": ("rendition", 320, 180, "video/mp4"),
        "demo-export-audio.m4a": ("rendition", None, None, "audio/mp4"),
        "demo-export.poster.jpg": ("poster", 320, 180, "image/jpeg"),
        "demo-export.storyboard.jpg": ("storyboard", 192, 162, "image/jpeg"),
        "demo-export.storyboard.vtt": ("storyboard", None, None, "text/vtt"),
    }
    for name in list(outputs)[:3]:
        assert abs(outputs[name]["durationSeconds"] - 10.0) <= 1 / 30 + 0.03
    job_dir = spool.layout.job_dir("deliverables")
    for name, output in outputs.items():
        assert (job_dir / name).stat().st_size == output["sizeBytes"] > 0
    assert spool.temp_leftovers() == []
