"""Everything in the spool is untrusted input (issue 11's high-severity cases): files in job
folders, claims, odd inbox names, reused ids. Each test builds the hostile state, runs a real
daemon on it, and checks that the item is handled or quarantined, the pass goes on, and
nothing outside the spool is read, moved or deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import Spool, tiny_job

from spooler.status import JobStatus

DEAD = "deadhost-999999-abcdef"  # a worker id with no heartbeat: presumed dead at once


def _status(job_id: str, state: str, **extra: object) -> dict[str, object]:
    now = "2026-01-01T00:00:00Z"
    return {
        "jobId": job_id,
        "state": state,
        "kind": "testpattern",
        "attempt": 1,
        "maxAttempts": 3,
        "submittedAt": now,
        "updatedAt": now,
        "worker": {"id": DEAD, "host": "deadhost", "pid": 999999},
        **extra,
    }


def _job_folder(spool: Spool, job_id: str, status: dict[str, object] | bytes) -> Path:
    """A job folder as a worker that died would have left it."""
    job_dir = spool.layout.job_dir(job_id)
    job_dir.mkdir(parents=True)
    (job_dir / f".owner.{DEAD}").touch()
    (job_dir / "job.json").write_text(json.dumps(tiny_job()))
    raw = status if isinstance(status, bytes) else json.dumps(status).encode()
    (job_dir / "status.json").write_bytes(raw)
    return job_dir


def _canary(tmp_path: Path) -> dict[Path, bytes]:
    outside = tmp_path / "outside"
    outside.mkdir()
    files = {outside / "secret.txt": b"secret\n", outside / "precious.txt": b"precious\n"}
    for path, data in files.items():
        path.write_bytes(data)
    return files


def _assert_canary_intact(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        assert path.read_bytes() == data, path
    (folder,) = {p.parent for p in files}
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in files)


def _good_job_still_runs(spool: Spool, job_id: str = "good-after") -> None:
    spool.submit(job_id, tiny_job())
    assert spool.wait_final(job_id, timeout=20)["state"] == "succeeded"


def test_a_claim_that_cannot_become_a_job_does_not_stop_the_others(
    spool: Spool, make_daemon
) -> None:
    # Given: eight claims of dead workers, the first one (in listing order too) a job whose
    # metadata holds a lone surrogate, another one nested 300 deep.
    spool.layout.claims.mkdir(parents=True)
    bad = b'{"kind": "testpattern", "durationSeconds": 0.2, "metadata": {"title": "\\ud800"}}'
    deep = (
        b'{"kind": "testpattern", "durationSeconds": 0.2, "metadata": '
        + b'{"a": ' * 300
        + b"1"
        + b"}" * 300
        + b"}"
    )
    (spool.layout.claims / f"a-bad.{DEAD}.json").write_bytes(bad)
    (spool.layout.claims / f"a-deep.{DEAD}.json").write_bytes(deep)
    for index in range(6):
        name = f"z{index}.deadhost-99999{index}-abcdef.json"
        (spool.layout.claims / name).write_text(json.dumps(tiny_job()))
    # When: a daemon starts on that spool.
    make_daemon()
    # Then: the bad ones are rejected with the path of the problem, the others all run.
    for job_id, code in (("a-bad", "unpaired_surrogate"), ("a-deep", "depth")):
        status = spool.wait_final(job_id)
        assert status["state"] == "rejected"
        assert status["error"]["code"] == "invalid_job"
        assert status["error"]["details"]["errors"][0]["code"] == code
        assert spool.layout.job_file(job_id).exists()  # the job file is kept
    for index in range(6):
        assert spool.wait_final(f"z{index}")["state"] == "succeeded"
    assert os.listdir(spool.layout.claims) == []


def test_validate_refuses_what_a_status_could_not_carry(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_bytes(
        b'{"kind": "testpattern", "durationSeconds": 1, "metadata": {"t": ["ok", "\\udfff"]}}'
    )
    result = subprocess.run(
        [sys.executable, "-m", "spooler", "validate", str(job)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "metadata.t[1]" in result.stdout + result.stderr
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps({**tiny_job(), "metadata": {"a": {"b": {"c": [[[[[[[1]]]]]]]}}}}))
    result = subprocess.run(
        [sys.executable, "-m", "spooler", "validate", str(deep)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "metadata" in result.stdout + result.stderr


def test_odd_inbox_names_are_moved_aside_with_an_error_file_and_claiming_goes_on(
    spool: Spool, make_daemon
) -> None:
    spool.layout.inbox.mkdir(parents=True)
    cjk = "中" * 80 + ".json"  # 244 bytes: any prefix made the rejected name too long
    (spool.layout.inbox / cjk).write_text("{}")
    raw_name = os.fsdecode(b"bad-\xff\xfe.json")
    (spool.layout.inbox / raw_name).write_text("{}")
    make_daemon()
    _good_job_still_runs(spool)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(os.listdir(spool.layout.inbox)) > 0:
        time.sleep(0.1)
    assert os.listdir(spool.layout.inbox) == []
    errors = [
        json.loads((spool.layout.rejected / n).read_text())
        for n in os.listdir(spool.layout.rejected)
        if n.endswith(".error.json")
    ]
    originals = sorted(e["originalName"] for e in errors)
    assert originals == sorted([cjk, "bad-\\xff\\xfe.json"])
    for name in os.listdir(spool.layout.rejected):
        assert len(os.fsencode(name)) <= 255


def test_a_directory_where_the_cancel_marker_goes_does_not_wedge_the_scan(
    spool: Spool, make_daemon
) -> None:
    make_daemon()
    spool.submit("done", tiny_job())
    assert spool.wait_final("done")["state"] == "succeeded"
    (spool.layout.job_dir("done") / "cancel").mkdir()
    (spool.layout.inbox / "done.cancel").write_text("")
    _good_job_still_runs(spool)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (spool.layout.inbox / "done.cancel").exists():
        time.sleep(0.1)
    assert not (spool.layout.inbox / "done.cancel").exists()
    assert (spool.layout.job_dir("done") / "cancel").is_dir()


def test_a_reused_id_is_recovered_even_by_a_daemon_that_remembers_it_finished(
    spool: Spool, make_daemon
) -> None:
    # Given: X succeeded on B; A started later and remembers X as finished.
    b1 = make_daemon(SPOOLER_WORKER_NAME="b")
    spool.submit("x", tiny_job())
    assert spool.wait_final("x")["state"] == "succeeded"
    a = make_daemon(SPOOLER_WORKER_NAME="a")
    time.sleep(1.5)  # a full recovery pass of A: X cached as final
    # When: X is deleted and resubmitted while A is frozen, claimed by B, and B dies -9.
    os.kill(a.pid, signal.SIGSTOP)
    try:
        (spool.layout.inbox / "x.delete").write_text("")
        deadline = time.monotonic() + 15
        while spool.layout.job_dir("x").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not spool.layout.job_dir("x").exists()
        spool.submit("x", tiny_job(duration=30))
        spool.wait_state("x", "running")
        b1.kill9()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # Then: A takes the new X over and runs it (it does not trust its memory of the old one).
    status = spool.wait_for(x := "x", lambda s: s["worker"]["id"] == a.events()[0]["worker"])
    assert status["state"] in ("queued", "running"), status
    assert spool.status(x)["attempt"] == 2


def test_paths_in_a_tampered_status_never_reach_outside_the_job_folder(
    spool: Spool, make_daemon, tmp_path: Path
) -> None:
    canary = _canary(tmp_path)
    depth = "../" * 6
    _job_folder(
        spool,
        "loot",
        _status(
            "loot",
            "running",
            pendingPublish={"temp": f"{depth}{tmp_path.name}/outside/secret.txt", "path": "x.txt"},
            plannedOutputs=["x.txt"],
        ),
    )
    _job_folder(
        spool,
        "wipe",
        _status(
            "wipe",
            "running",
            outputs=[{"path": f"{depth}{tmp_path.name}/outside/precious.txt", "sizeBytes": 9}],
        ),
    )
    make_daemon()
    for job_id in ("loot", "wipe"):
        status = spool.wait_final(job_id)
        assert status["state"] == "failed"
        assert status["error"]["code"] == "internal_error"
        assert "status file unreadable" in status["error"]["message"]
    assert not (spool.layout.job_dir("loot") / "x.txt").exists()
    _good_job_still_runs(spool)
    _assert_canary_intact(canary)


def test_a_fifo_as_status_file_blocks_neither_the_daemon_nor_the_cli(
    spool: Spool, make_daemon
) -> None:
    job_dir = _job_folder(spool, "fifo", b"")
    (job_dir / "status.json").unlink()
    os.mkfifo(job_dir / "status.json")
    make_daemon()
    _good_job_still_runs(spool)
    assert spool.wait_final("fifo")["error"]["code"] == "internal_error"
    os.unlink(job_dir / "status.json")
    os.mkfifo(job_dir / "status.json")  # again, for the commands that read the spool
    env = {**os.environ, "SPOOLER_SPOOL_DIR": str(spool.root)}
    for command in (["ls"], ["status", "fifo"], ["metrics"], ["audit"]):
        result = subprocess.run(
            [sys.executable, "-m", "spooler", *command],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert "Traceback" not in result.stderr, (command, result.stderr)


def test_a_job_log_symlink_is_replaced_never_followed(
    spool: Spool, make_daemon, tmp_path: Path
) -> None:
    canary = _canary(tmp_path)
    job_dir = _job_folder(spool, "linked", _status("linked", "queued"))
    (job_dir / "job.log").symlink_to(tmp_path / "outside" / "secret.txt")
    (job_dir / "cancel-me").mkdir()  # unrelated clutter a client left
    make_daemon()
    assert spool.wait_final("linked")["state"] == "succeeded"
    assert not (job_dir / "job.log").is_symlink()
    assert "attempt" in (job_dir / "job.log").read_text()
    _assert_canary_intact(canary)


def test_a_cancel_marker_symlink_is_never_followed(
    spool: Spool, make_daemon, tmp_path: Path
) -> None:
    canary = _canary(tmp_path)
    make_daemon()
    spool.submit("long", tiny_job(duration=30))
    spool.wait_state("long", "running")
    target = tmp_path / "outside" / "made-by-daemon"
    spool.layout.job_cancel("long").symlink_to(target)  # a dangling link counts as cancel
    status = spool.wait_final("long", timeout=10)
    assert status["state"] == "cancelled"
    assert not target.exists()
    (spool.layout.inbox / "long.delete").write_text("")
    deadline = time.monotonic() + 10
    while spool.layout.job_dir("long").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not spool.layout.job_dir("long").exists()
    _assert_canary_intact(canary)


def test_status_model_refuses_paths_that_leave_the_job_folder() -> None:
    base = _status("j", "running")
    for bad in ("../x", "/etc/passwd", "a/b", "..", ".", "", "x\x00y"):
        for field in (
            {"outputs": [{"path": bad, "sizeBytes": 1}]},
            {"pendingPublish": {"temp": bad, "path": "ok"}},
            {"pendingPublish": {"temp": ".tmp-ok", "path": bad}},
            {"plannedOutputs": [bad]},
        ):
            try:
                JobStatus.model_validate({**base, **field})
            except ValueError:
                continue
            raise AssertionError(f"accepted {field}")
    JobStatus.model_validate({**base, "outputs": [{"path": "out.mp4", "sizeBytes": 1}]})
