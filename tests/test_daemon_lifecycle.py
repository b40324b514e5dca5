"""Every state transition through a real daemon process and real ffmpeg."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

from support import DaemonProcess, Spool, tiny_job


def _rejected_entries(spool: Spool) -> list[str]:
    # Dot-files are atomic writes in progress (an .error.json being written).
    return sorted(p.name for p in spool.layout.rejected.iterdir() if not p.name.startswith("."))


def test_job_runs_to_succeeded_with_verified_output(spool: Spool, make_daemon) -> None:
    # Given a running daemon
    make_daemon()
    # When a job is submitted atomically
    spool.submit("ok-1", tiny_job(1.0, metadata={"projectId": "p7"}))
    # Then it runs and succeeds with its output listed and published
    status = spool.wait_final("ok-1")
    assert status["state"] == "succeeded", status
    assert [h["state"] for h in status["history"]] == ["queued", "running", "succeeded"]
    assert status["progress"] == 1.0
    assert status["metadata"] == {"projectId": "p7"}
    assert status["worker"]["pid"] > 0 and status["startedAt"] and status["finishedAt"]
    (output,) = status["outputs"]
    path = spool.layout.job_dir("ok-1") / output["path"]
    assert path.stat().st_size == output["sizeBytes"] > 0
    assert abs(output["durationSeconds"] - 1.0) < 0.15
    # The job file is kept; the inbox is empty; no temporary file remains.
    assert json.loads(spool.layout.job_file("ok-1").read_text())["kind"] == "testpattern"
    assert list(spool.layout.inbox.iterdir()) == []
    assert spool.temp_leftovers() == []
    log = spool.layout.log_file("ok-1").read_text()
    assert "testsrc2" in log and "-progress" in log  # the exact argv is in the job log


def test_malformed_json_is_rejected_and_kept(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("bad-json", b'{"kind": "testpattern", ')
    status = spool.wait_final("bad-json")
    assert status["state"] == "rejected"
    assert status["error"]["code"] == "invalid_json"
    assert "line 1" in status["error"]["message"]
    assert spool.layout.job_file("bad-json").read_bytes() == b'{"kind": "testpattern", '


def test_schema_violation_lists_every_error_with_json_paths(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("bad-schema", tiny_job(-1, width=33, surprise=True))
    status = spool.wait_final("bad-schema")
    assert status["state"] == "rejected"
    assert status["error"]["code"] == "invalid_job"
    paths = {e["path"]: e["code"] for e in status["error"]["details"]["errors"]}
    assert paths == {
        "durationSeconds": "greater_than_equal",  # at least 0.1 s (issue 11)
        "width": "multiple_of",
        "surprise": "extra_forbidden",
    }


def test_bad_job_id_is_moved_aside_with_an_error_file(spool: Spool, make_daemon) -> None:
    daemon = make_daemon()
    (spool.layout.inbox / "not a valid id!.json").write_text(json.dumps(tiny_job()))
    (spool.layout.inbox / "notes.txt").write_text("hello")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(_rejected_entries(spool)) < 4:
        time.sleep(0.05)
    names = _rejected_entries(spool)
    assert len(names) == 4, names
    errors = [
        json.loads((spool.layout.rejected / n).read_text())
        for n in names
        if n.endswith(".error.json")
    ]
    assert sorted(e["originalName"] for e in errors) == ["not a valid id!.json", "notes.txt"]
    assert {e["code"] for e in errors} == {"invalid_id"}
    moved = [n for n in names if n.endswith("notes.txt")]
    assert (spool.layout.rejected / moved[0]).read_text() == "hello"  # content preserved
    # The daemon keeps serving.
    spool.submit("after-strays", tiny_job())
    assert spool.wait_final("after-strays")["state"] == "succeeded"
    assert daemon.proc.poll() is None


def test_duplicate_id_is_moved_aside_and_the_original_untouched(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("dup", tiny_job())
    first = spool.wait_final("dup")
    spool.submit("dup", {"kind": "testpattern", "durationSeconds": 0.5, "metadata": {"v": 2}})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
        n.endswith(".error.json") for n in _rejected_entries(spool)
    ):
        time.sleep(0.05)
    (error_file,) = [n for n in _rejected_entries(spool) if n.endswith(".error.json")]
    error = json.loads((spool.layout.rejected / error_file).read_text())
    assert error["code"] == "duplicate_id"
    moved = spool.layout.rejected / error["movedTo"]
    assert json.loads(moved.read_text())["metadata"] == {"v": 2}
    assert spool.status("dup") == first


def test_half_written_file_is_claimed_once_after_the_writer_closes(
    spool: Spool, make_daemon
) -> None:
    daemon = make_daemon()
    payload = json.dumps(tiny_job(0.5)).encode()
    target = spool.layout.inbox_job("slow")
    closed_at: list[float] = []

    def slow_writer() -> None:
        # Like `cp` over a slow link: the final name, written in pieces over two seconds.
        with target.open("wb") as handle:
            for i in range(len(payload)):
                handle.write(payload[i : i + 1])
                handle.flush()
                time.sleep(2.0 / len(payload))
        closed_at.append(time.time())

    writer = threading.Thread(target=slow_writer)
    writer.start()
    writer.join()
    status = spool.wait_final("slow")
    assert status["state"] == "succeeded", status
    claims = [e for e in daemon.events() if e.get("event") == "job_claimed"]
    assert [c["job_id"] for c in claims] == ["slow"]
    claimed_at = status["claimedAt"]
    from datetime import datetime

    assert datetime.fromisoformat(claimed_at).timestamp() >= closed_at[0] - 0.01


def test_transient_ffmpeg_failures_are_retried_with_backoff(
    spool: Spool, make_daemon, tmp_path: Path
) -> None:
    # Given an ffmpeg that fails its first two runs (a flaky disk or codec hiccup)
    from spooler.ffmpeg import find_ffmpeg

    counter = tmp_path / "runs"
    flaky = tmp_path / "flaky-ffmpeg"
    flaky.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "{counter}"\n'
        'if [ "$n" -le 2 ]; then echo "Conversion failed!" >&2; exit 1; fi\n'
        f'exec "{find_ffmpeg(None)}" "$@"\n'
    )
    flaky.chmod(flaky.stat().st_mode | stat.S_IXUSR)
    make_daemon(SPOOLER_FFMPEG_PATH=str(flaky))
    spool.submit("flaky", tiny_job(maxAttempts=3))
    status = spool.wait_final("flaky")
    # Then the third attempt succeeds, and the history shows both retries with their cause
    assert status["state"] == "succeeded", status
    assert status["attempt"] == 3 and status["maxAttempts"] == 3
    retries = [h for h in status["history"] if h["state"] == "queued" and h["reason"]]
    assert [h["reason"] for h in retries] == ["ffmpeg_failed", "ffmpeg_failed"]


def test_attempts_exhausted_fails_with_the_last_error(spool: Spool, make_daemon, tmp_path) -> None:
    broken = tmp_path / "broken-ffmpeg"
    broken.write_text("#!/bin/sh\necho 'Error opening output files: I/O error' >&2\nexit 1\n")
    broken.chmod(0o755)
    make_daemon(SPOOLER_FFMPEG_PATH=str(broken))
    spool.submit("broken", tiny_job(maxAttempts=2))
    status = spool.wait_final("broken")
    assert status["state"] == "failed"
    assert status["attempt"] == 2
    assert status["error"]["code"] == "ffmpeg_failed"
    assert "I/O error" in status["error"]["message"]
    assert status["error"]["details"]["stderrTail"]


def test_timeout_fails_the_job_without_retry(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("slowpoke", tiny_job(30, realtime=True, timeoutSeconds=1))
    status = spool.wait_final("slowpoke", timeout=20)
    assert status["state"] == "failed"
    assert status["error"]["code"] == "timeout"
    assert status["attempt"] == 1
    assert status["outputs"] == [] and spool.temp_leftovers() == []


def test_stalled_ffmpeg_is_killed_and_retried(spool: Spool, make_daemon, tmp_path) -> None:
    hung = tmp_path / "hung-ffmpeg"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    make_daemon(SPOOLER_FFMPEG_PATH=str(hung), SPOOLER_LIMITS__STALL_SECONDS="1")
    spool.submit("hung", tiny_job(maxAttempts=2))
    status = spool.wait_final("hung", timeout=30)
    assert status["state"] == "failed"
    assert status["error"]["code"] == "stalled"
    assert [h["reason"] for h in status["history"] if h["reason"]] == ["stalled", "stalled"]


def test_hostile_inbox_entries_are_rejected_and_the_daemon_keeps_serving(
    spool: Spool, make_daemon, tmp_path: Path
) -> None:
    daemon = make_daemon()
    secret = tmp_path / "secret.txt"
    secret.write_text("CANARY-5f1d")
    inbox = spool.layout.inbox
    os.mkfifo(inbox / "fifo.json")
    (inbox / "link.json").symlink_to(secret)
    (inbox / "folder.json").mkdir()
    (inbox / "huge.json").write_bytes(b" " * (1_048_576 + 1))
    for job_id in ("fifo", "link", "folder"):
        status = spool.wait_final(job_id)
        assert status["state"] == "rejected"
        assert status["error"]["code"] == "not_a_file", status
    huge = spool.wait_final("huge")
    assert huge["error"]["code"] == "too_large"
    # Originals preserved (the symlink itself, not its target), secret never copied.
    assert spool.layout.job_file("link").is_symlink()
    assert stat.S_ISFIFO(spool.layout.job_file("fifo").lstat().st_mode)
    for path in spool.root.rglob("*"):
        if path.is_file() and not path.is_symlink() and not stat.S_ISFIFO(path.lstat().st_mode):
            assert b"CANARY-5f1d" not in path.read_bytes(), path
    spool.submit("next", tiny_job())
    assert spool.wait_final("next")["state"] == "succeeded"
    assert daemon.proc.poll() is None


def test_status_is_always_complete_json_while_running(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("watched", tiny_job(3, realtime=True))
    seen_states: set[str] = set()
    progress: list[float] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            raw = spool.layout.status_file("watched").read_bytes()
        except FileNotFoundError:
            continue
        status = json.loads(raw)  # never a half-written file
        seen_states.add(status["state"])
        if status["state"] == "running":
            progress.append(status["progress"])
        if status["state"] == "succeeded":
            break
    assert "running" in seen_states and "succeeded" in seen_states
    assert progress == sorted(progress), "progress must never go backwards"
    assert any(0 < p < 1 for p in progress)


def test_graceful_stop_requeues_and_another_daemon_finishes(spool: Spool, make_daemon) -> None:
    first: DaemonProcess = make_daemon(SPOOLER_SHUTDOWN_GRACE_SECONDS="0.5")
    spool.submit("long", tiny_job(20, realtime=True))
    spool.wait_state("long", "running")
    assert first.stop() == 0
    status = spool.status("long")
    assert status is not None and status["state"] == "queued"
    assert status["history"][-1]["reason"] == "daemon_stopping"
    assert (spool.layout.job_dir("long") / ".owner.released").exists()
    assert not list(spool.layout.workers.glob("*.json"))  # heartbeat removed
    # A new daemon takes the released job at once and runs it again (same attempt).
    make_daemon()
    spool.wait_state("long", "running", timeout=10)
    spool.submit("marker", tiny_job())
    (spool.layout.inbox / "long.cancel").touch()
    assert spool.wait_final("long")["state"] == "cancelled"
