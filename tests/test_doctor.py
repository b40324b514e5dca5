"""`spooler doctor`: pure evaluation of the facts, and the command on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spooler.config import Settings
from spooler.doctor import (
    Check,
    Level,
    check_spool,
    evaluate_disk,
    evaluate_encoders,
    evaluate_fonts,
    evaluate_inotify,
    overall,
    parse_codec_list,
    parse_filter_list,
    render_json,
    render_text,
)

ENCODERS_OUTPUT = """Encoders:
 V..... = Video
 A..... = Audio
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D libvpx-vp9           libvpx VP9 (codec vp9)
 A....D aac                  AAC (Advanced Audio Coding)
"""
FILTERS_OUTPUT = """Filters:
  T.. = Timeline support
 T. drawtext          V->V       Draw text on top of video frames using libfreetype library.
 .. scale             V->V       Scale the input video size and/or convert the image format.
"""
GIB = 1024**3


def test_parse_ffmpeg_lists() -> None:
    assert parse_codec_list(ENCODERS_OUTPUT) == {"libx264", "libvpx-vp9", "aac"}
    assert parse_filter_list(FILTERS_OUTPUT) == {"drawtext", "scale"}


def test_encoders_required_and_optional() -> None:
    checks = evaluate_encoders({"libx264", "aac"}, {"drawtext"})
    assert [c.level for c in checks] == [Level.PASS, Level.WARN, Level.PASS]
    assert "libx265" in checks[1].message
    missing = evaluate_encoders({"aac"}, set())
    assert missing[0].level is Level.FAIL and "libx264" in missing[0].message
    assert missing[-1].level is Level.WARN and "drawtext" in missing[-1].name


@pytest.mark.parametrize(
    ("watches", "instances", "mode", "level"),
    [
        (65536, 128, "auto", Level.PASS),
        (100, 128, "auto", Level.WARN),
        (65536, 2, "inotify", Level.WARN),
        (65536, 0, "inotify", Level.FAIL),
        (65536, 0, "auto", Level.WARN),
        (0, 0, "polling", Level.PASS),
        (None, None, "auto", Level.WARN),
    ],
)
def test_inotify_limits(
    watches: int | None, instances: int | None, mode: str, level: Level
) -> None:
    assert evaluate_inotify(watches, instances, mode).level is level


def test_disk_thresholds() -> None:
    assert evaluate_disk(100 * GIB, 200 * GIB, Path("/x")).level is Level.PASS
    assert evaluate_disk(5 * GIB, 200 * GIB, Path("/x")).level is Level.WARN
    assert evaluate_disk(GIB // 2, 200 * GIB, Path("/x")).level is Level.FAIL


def test_fonts() -> None:
    none = evaluate_fonts("auto", None, [])
    assert none.level is Level.WARN
    assert "text watermarks are unavailable" in none.message
    assert "fonts-dejavu-core" in none.message
    missing = evaluate_fonts("/opt/x.ttf", None, ["/usr/share/fonts/a.ttf"])
    assert missing.level is Level.WARN
    assert "'/opt/x.ttf' is not a readable font file" in missing.message
    assert "set it to a font file, or to auto" in missing.message
    found = evaluate_fonts("auto", "/usr/share/fonts/a.ttf", ["/usr/share/fonts/a.ttf"])
    assert found.level is Level.PASS
    assert "text watermarks use /usr/share/fonts/a.ttf" in found.message


def test_overall_and_rendering() -> None:
    checks = [Check("a", Level.PASS, "fine"), Check("b", Level.WARN, "hmm")]
    assert overall(checks) is Level.WARN
    assert overall([*checks, Check("c", Level.FAIL, "bad")]) is Level.FAIL
    text = render_text(checks)
    assert text.splitlines()[0].startswith("PASS  a")
    assert text.splitlines()[-1] == "WARN: 1 passed, 1 warning(s), 0 failed"
    assert render_json(checks)["ok"] is True


def test_spool_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    (spool / "jobs").mkdir()
    os.chmod(spool / "inbox", 0o2775)
    os.chmod(spool / "jobs", 0o2775)
    checks = check_spool(Settings(spool_dir=spool))
    assert [c.level for c in checks] == [Level.PASS, Level.PASS]
    assert list((spool / "inbox").iterdir()) == [] and list((spool / "jobs").iterdir()) == []


def test_missing_spool_is_a_warning_when_it_can_be_created(tmp_path: Path) -> None:
    [check] = check_spool(Settings(spool_dir=tmp_path / "not-yet"))
    assert check.level is Level.WARN


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: no permission failure")
def test_read_only_inbox_fails(tmp_path: Path) -> None:
    inbox = tmp_path / "spool" / "inbox"
    inbox.mkdir(parents=True)
    inbox.chmod(0o555)
    try:
        checks = check_spool(Settings(spool_dir=tmp_path / "spool"))
    finally:
        inbox.chmod(0o755)
    assert checks[0].level is Level.FAIL


def test_spool_that_is_a_file_fails(tmp_path: Path) -> None:
    # Works as root too (unlike permission bits): a file cannot hold the spool tree.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    [check] = check_spool(Settings(spool_dir=blocked))
    assert check.level is Level.FAIL


def run_doctor(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env["SPOOLER_SPOOL_DIR"] = str(tmp_path / "spool")
    env["SPOOLER_MEDIA_ROOTS"] = json.dumps([str(tmp_path)])
    return subprocess.run(
        [sys.executable, "-m", "spooler", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_doctor_command_on_this_machine(tmp_path: Path) -> None:
    result = run_doctor(tmp_path, "--json")
    report = json.loads(result.stdout)
    names = {c["name"] for c in report["checks"]}
    assert {"ffmpeg", "ffmpeg encoders", "inotify limits", "free disk", "fonts"} <= names
    by_name = {c["name"]: c for c in report["checks"]}
    # The venv brings ffmpeg (imageio-ffmpeg wheel) with libx264 and aac.
    assert by_name["ffmpeg"]["level"] == "PASS", by_name["ffmpeg"]
    assert by_name["ffmpeg encoders"]["level"] == "PASS", by_name["ffmpeg encoders"]
    assert result.returncode == (1 if report["result"] == "FAIL" else 0), result.stdout
    text = run_doctor(tmp_path)
    assert text.returncode == result.returncode
    assert text.stdout.splitlines()[0].startswith("PASS  ffmpeg")


def test_doctor_exits_1_on_fail(tmp_path: Path) -> None:
    env_file = tmp_path / "spool"
    env_file.write_text("a file where the spool should be")
    result = run_doctor(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "FAIL  spool" in result.stdout
