"""The CLI against a real daemon, heartbeats and leases across hosts, systemd notify."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from support import DaemonProcess, Spool, tiny_job

from spooler.status import State, WorkerRef, new_status, transition, utcnow


def spooler(daemon_env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spooler", *args],
        env=daemon_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_submit_wait_status_ls_cancel(spool: Spool, make_daemon, tmp_path: Path) -> None:
    daemon: DaemonProcess = make_daemon()
    env = daemon.env
    good = tmp_path / "good-1.json"
    good.write_text(json.dumps(tiny_job()))
    done = spooler(env, "submit", str(good), "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout and "testpattern.mp4" in done.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "testpattern", "width": 7}')
    rejected = spooler(env, "submit", str(bad), "--id", "bad-1", "--wait", cwd=tmp_path)
    assert rejected.returncode == 4
    assert "invalid_job" in rejected.stdout
    again = spooler(env, "submit", str(good), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr

    status = spooler(env, "status", "good-1", "--json", cwd=tmp_path)
    assert status.returncode == 0
    assert json.loads(status.stdout)["state"] == "succeeded"
    assert spooler(env, "status", "nope", cwd=tmp_path).returncode == 2

    long = tmp_path / "long.json"
    long.write_text(json.dumps(tiny_job(30, realtime=True)))
    assert spooler(env, "submit", str(long), cwd=tmp_path).returncode == 0
    spool.wait_state("long", "running")
    assert spooler(env, "status", "long", cwd=tmp_path).returncode == 5
    assert spooler(env, "cancel", "long", cwd=tmp_path).returncode == 0
    assert spool.wait_final("long", timeout=5)["state"] == "cancelled"
    assert spooler(env, "status", "long", cwd=tmp_path).returncode == 3

    listing = spooler(env, "ls", "--json", cwd=tmp_path)
    rows = {json.loads(line)["jobId"]: json.loads(line) for line in listing.stdout.splitlines()}
    assert {k: v["state"] for k, v in rows.items()} == {
        "good-1": "succeeded",
        "bad-1": "rejected",
        "long": "cancelled",
    }
    table = spooler(env, "ls", cwd=tmp_path)
    assert "good-1" in table.stdout and "rejected" in table.stdout

    assert spooler(env, "delete", "good-1", cwd=tmp_path).returncode == 0
    deadline = time.monotonic() + 20
    while spool.layout.job_dir("good-1").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not spool.layout.job_dir("good-1").exists()


def test_validate_and_schema_commands(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    job = tmp_path / "j.json"
    job.write_text(json.dumps(tiny_job()))
    ok = spooler(env, "validate", str(job), cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"valid": True, "kind": "testpattern"}
    job.write_text('{"kind": "testpattern", "durationSeconds": 0}')
    bad = spooler(env, "validate", str(job), cwd=tmp_path)
    report = json.loads(bad.stdout)
    assert bad.returncode == 1 and report["code"] == "invalid_job"
    assert report["details"]["errors"][0]["path"] == "durationSeconds"
    schema = spooler(env, "schema", "status", cwd=tmp_path)
    assert json.loads(schema.stdout)["title"].startswith("spooler status file")


def test_bad_setting_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    config = tmp_path / "bad.yaml"
    config.write_text("max_jobs: 0\nretention:\n  succeded_days: 1\n")
    result = spooler(env, "--config", str(config), "run", cwd=tmp_path)
    assert result.returncode != 0
    assert "max_jobs" in result.stderr and "succeded_days" in result.stderr


def test_health_follows_the_heartbeat(spool: Spool, make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon()
    healthy = spooler(daemon.env, "health", cwd=tmp_path)
    assert healthy.returncode == 0, healthy.stdout
    assert daemon.stop() == 0
    unhealthy = spooler(daemon.env, "health", cwd=tmp_path)
    assert unhealthy.returncode == 1
    frozen = make_daemon()
    os.kill(frozen.pid, 19)  # SIGSTOP: alive but no longer beating
    try:
        time.sleep(2.0)  # 3 heartbeats of 0.5 s, plus margin
        assert spooler(frozen.env, "health", cwd=tmp_path).returncode == 1
    finally:
        os.kill(frozen.pid, 18)  # SIGCONT


def _plant_orphan(spool: Spool, job_id: str, owner: str, host: str, beat_age: float) -> None:
    """A job that a worker on another host was running, with that worker's heartbeat."""
    layout = spool.layout
    for directory in layout.all_dirs():
        directory.mkdir(parents=True, exist_ok=True)
    job_dir = layout.job_dir(job_id)
    job_dir.mkdir()
    layout.job_file(job_id).write_text(json.dumps(tiny_job()))
    worker = WorkerRef(id=owner, host=host, pid=4242)
    now = utcnow()
    status = new_status(
        job_id, State.QUEUED, now=now, submitted_at=now, worker=worker, max_attempts=3
    )
    status = transition(status, State.RUNNING, now=now)
    layout.status_file(job_id).write_text(json.dumps(status.to_json()))
    (job_dir / f".owner.{owner}").touch()
    (job_dir / ".tmp-abc-partial.mp4").write_bytes(b"partial")
    beat = layout.heartbeat_file(owner)
    beat.write_text(
        json.dumps(
            {
                "workerId": owner,
                "host": host,
                "pid": 4242,
                "namespace": "other-host",
                "state": "running",
            }
        )
    )
    stamp = beat.stat().st_mtime - beat_age
    os.utime(beat, (stamp, stamp))


def test_jobs_of_a_silent_worker_on_another_host_are_taken_after_its_lease(
    spool: Spool, make_daemon
) -> None:
    # Given two jobs of workers on other hosts: one silent for 60 s, one that just beat
    _plant_orphan(spool, "orphan", "far-1-aaaaaa", "far-host", beat_age=60)
    _plant_orphan(spool, "alive", "near-2-bbbbbb", "near-host", beat_age=0)
    daemon = make_daemon()
    # Then only the silent worker's job is taken over, rerun, and its temp file removed
    status = spool.wait_final("orphan", timeout=20)
    assert status["state"] == "succeeded"
    assert status["attempt"] == 2
    assert [h["reason"] for h in status["history"] if h["reason"]] == ["worker_lost"]
    assert not (spool.layout.job_dir("orphan") / ".tmp-abc-partial.mp4").exists()
    assert spool.status("alive")["state"] == "running"
    assert (spool.layout.job_dir("alive") / ".owner.near-2-bbbbbb").exists()
    recovered = [e["job_id"] for e in daemon.events() if e.get("event") == "job_recovered"]
    assert recovered == ["orphan"]


def test_systemd_notify_protocol(spool: Spool, make_daemon, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    try:
        daemon = make_daemon(wait_ready=False, extra_env={"NOTIFY_SOCKET": address})
        received: list[str] = []
        deadline = time.monotonic() + 20
        while not any("READY=1" in m for m in received) or not any(
            "WATCHDOG=1" in m for m in received
        ):
            assert time.monotonic() < deadline, received
            received.append(sock.recv(4096).decode())
        assert any(m.startswith("READY=1\nSTATUS=watching") for m in received)
        daemon.proc.send_signal(15)
        while not any("STOPPING=1" in m for m in received):
            received.append(sock.recv(4096).decode())
        assert daemon.proc.wait(timeout=10) == 0
    finally:
        sock.close()


def test_every_log_line_about_a_job_names_it(spool: Spool, make_daemon) -> None:
    daemon = make_daemon()
    spool.submit("logged", tiny_job())
    spool.submit("logged-bad", b"{")
    spool.wait_final("logged")
    spool.wait_final("logged-bad")
    # The log line follows the status write: wait for it rather than race it.
    daemon.wait_event("job_rejected")
    daemon.wait_event("job_attempt_ended")
    job_events = {"job_claimed", "job_started", "job_attempt_ended", "job_rejected"}
    seen = [e for e in daemon.events() if e.get("event") in job_events]
    assert {e["event"] for e in seen} == job_events
    assert all(e.get("job_id") in ("logged", "logged-bad") for e in seen)


def test_the_daemon_writes_the_metrics_textfile(spool: Spool, make_daemon, tmp_path: Path) -> None:
    metrics = tmp_path / "textfile" / "spooler.prom"
    metrics.parent.mkdir()
    make_daemon(SPOOLER_METRICS_FILE=str(metrics), SPOOLER_METRICS_INTERVAL_SECONDS="0.3")
    spool.submit("counted", tiny_job())
    spool.submit("refused", b"{")
    spool.wait_final("counted")
    spool.wait_final("refused")
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = metrics.read_text() if metrics.exists() else ""
        if 'spooler_jobs{state="succeeded"} 1' in text and 'state="rejected"} 1' in text:
            break
        time.sleep(0.1)
    assert 'spooler_jobs{state="succeeded"} 1' in text, text
    assert 'spooler_job_failures{state="rejected",code="invalid_json"} 1' in text, text
    assert [p.name for p in metrics.parent.iterdir()] == ["spooler.prom"]  # atomic, no temp
