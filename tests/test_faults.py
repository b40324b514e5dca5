"""Fault drills with real processes: the kill loop, a full disk, a read-only spool, ffmpeg
killed from outside."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Spool, pid_alive, tiny_job

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from kill_loop import run_kill_loop


@pytest.mark.slow
@pytest.mark.timeout(420)  # its own deadline is 400 s; ~100 s on a quiet 2-core machine
def test_kill_loop_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    # Given two daemons, 300 short jobs and 60 hostile job files arriving over time,
    # with one daemon SIGKILLed at random moments and restarted 50 times
    result = run_kill_loop(
        tmp_path / "spool", jobs=300, kills=50, daemons=2, seed=7, timeout=400, bad_inputs=60
    )
    # Then the audit finds every good job succeeded once, every bad one rejected, nothing
    # temporary left and nothing lost
    assert result["kills"] >= 50
    assert result["lost"] == 0
    assert result["good_states"] == ["succeeded"], result["text"]
    # A mutation can leave a job valid; most are rejected, and nothing ends any other way.
    assert set(result["by_state"]) <= {"succeeded", "rejected"}
    assert result["by_state"]["rejected"] >= 50
    assert sum(result["by_state"].values()) == 360
    assert result["ok"], result["text"]
    assert result["recovered"] > 0, "kills should have interrupted some running jobs"


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_fails_the_job_with_disk_full_and_the_daemon_recovers(
    spool: Spool, make_daemon
) -> None:
    with tmpfs(spool.root, "3m"):
        # Given a spool on a 3 MB filesystem
        daemon = make_daemon(SPOOLER_RETRY__MAX_ATTEMPTS="2")
        # When a job writes more than fits
        spool.submit("too-big", tiny_job(20, width=640, height=480, fps=25))
        status = spool.wait_final("too-big", timeout=60)
        # Then it fails (after its retry) with disk_full, publishing nothing
        assert status["state"] == "failed", status
        assert status["error"]["code"] == "disk_full"
        assert [h["reason"] for h in status["history"] if h["reason"]] == ["disk_full"] * 2
        assert status["outputs"] == []
        assert spool.temp_leftovers() == []
        assert not list(spool.layout.job_dir("too-big").glob("*.mp4"))
        # And the daemon keeps serving: a job that fits succeeds
        spool.submit("fits", tiny_job())
        assert spool.wait_final("fits")["state"] == "succeeded"
        assert daemon.proc.poll() is None
        daemon.stop()


def test_read_only_spool_does_not_stop_the_daemon(spool: Spool, make_daemon) -> None:
    with tmpfs(spool.root, "20m"):
        daemon = make_daemon()
        spool.submit("before", tiny_job())
        assert spool.wait_final("before")["state"] == "succeeded"
        # When the volume turns read-only for a while (an NFS server hiccup, a remount)
        subprocess.run(["mount", "-o", "remount,ro", str(spool.root)], check=True)
        try:
            time.sleep(2.5)  # heartbeats, rescans and recovery all fail meanwhile
            assert daemon.proc.poll() is None, "the daemon must survive a read-only spool"
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(spool.root)], check=True)
        # Then it carries on as soon as the volume is writable again
        spool.submit("after", tiny_job())
        assert spool.wait_final("after")["state"] == "succeeded"
        failures = [
            e
            for e in daemon.events()
            if e.get("event") in ("loop_phase_failed", "heartbeat_failed")
        ]
        assert failures, "the read-only period should have been logged"
        daemon.stop()


def test_ffmpeg_killed_from_outside_is_retried(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("victim", tiny_job(3, realtime=True, maxAttempts=2))
    spool.wait_for("victim", lambda s: s["state"] == "running" and s["progress"] > 0)
    log = spool.layout.log_file("victim").read_text()
    pid = int(
        next(line for line in log.splitlines() if line.startswith("# ffmpeg pid")).split()[-1]
    )
    os.kill(pid, signal.SIGKILL)  # the OOM killer, or an operator
    status = spool.wait_final("victim", timeout=30)
    assert status["state"] == "succeeded"
    assert [h["reason"] for h in status["history"] if h["reason"]] == ["ffmpeg_killed"]
    assert not pid_alive(pid)


def test_missing_ffmpeg_stops_the_daemon_at_start(spool: Spool, make_daemon) -> None:
    daemon = make_daemon(wait_ready=False, SPOOLER_FFMPEG_PATH="/nonexistent/ffmpeg")
    assert daemon.proc.wait(timeout=20) == 2
    daemon.wait_event("ffmpeg_missing")


@pytest.mark.parametrize(
    "crash_point", ["SPOOLER_FAULT_EXIT_BEFORE_RENAME", "SPOOLER_FAULT_EXIT_AFTER_PUBLISH"]
)
def test_a_crash_around_the_publish_finishes_the_job_without_running_it_again(
    spool: Spool, make_daemon, crash_point: str
) -> None:
    # Given a daemon that dies (as kill -9 would) just before or just after renaming the
    # verified output into place, before writing "succeeded"
    crashing = make_daemon(extra_env={crash_point: "1"})
    spool.submit("almost", tiny_job(0.5))
    assert crashing.proc.wait(timeout=30) == 137
    assert spool.status("almost")["state"] == "running"
    # When a daemon starts again
    make_daemon()
    status = spool.wait_final("almost")
    # Then recovery completes the publish and the job, without a second run
    assert status["state"] == "succeeded"
    assert status["attempt"] == 1
    assert status["history"][-1]["reason"] == "finished_by_recovery"
    (output,) = status["outputs"]
    assert (spool.layout.job_dir("almost") / output["path"]).stat().st_size == output["sizeBytes"]
    log = spool.layout.log_file("almost").read_text()
    assert log.count("# published ") == 1
    assert log.count("# attempt ") == 1  # "# attempt 1 by ..." only: never started again
    assert spool.temp_leftovers() == []
