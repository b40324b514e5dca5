"""The daemon loop driven in process, one `step` at a time, with chosen clocks (monotonic,
wall, and the file server's): cancel while queued, adoption, fencing, retention, readiness.
Real crashes stay with the kill loop and the process tests; here only decisions are timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from support import tiny_job

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.daemon import Daemon
from spooler.errors import ErrorCode, JobError
from spooler.fsutil import leases_work, open_for_writing_elsewhere
from spooler.intake.inbox import InboxIntake
from spooler.jobtable import JobTable
from spooler.layout import SpoolLayout
from spooler.loader import load_job
from spooler.runner import JobHandle, SlotSignals
from spooler.spool import RELEASED, ensure_layout, read_status, scan_inbox
from spooler.status import State, new_status
from spooler.storage import RolledForward
from spooler.worker import WorkerIdentity

DEAD = "deadhost-999999-abcdef"
T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    settings = Settings(
        spool_dir=tmp_path / "spool",
        media_roots=[tmp_path / "media"],
        max_jobs=1,
        settle_seconds=1.0,
        inbox_check="settle",
    )
    made = Daemon(settings, me=WorkerIdentity.current("steptest"))
    ensure_layout(made.layout)
    with structlog.testing.capture_logs():  # the job threads' events too: kept off stdout
        yield made
    made.intake.close()
    for handle in list(made.table.running.values()):
        handle.stop.set()
        if handle.thread is not None:
            handle.thread.join(timeout=20)


def clocks(at: float, *, days: float = 0.0, server: float | None = None) -> Clocks:
    return Clocks(
        monotonic=1000.0 + at,
        wall=T0 + timedelta(days=days, seconds=at),
        server=server if server is not None else 1e9 + at,
    )


def job_folder(daemon: Daemon, job_id: str, state: str, **extra: object) -> Path:
    """A job folder as a worker that died would have left it."""
    job_dir = daemon.layout.job_dir(job_id)
    job_dir.mkdir(parents=True)
    (job_dir / f".owner.{DEAD}").touch()
    (job_dir / "job.json").write_text(json.dumps(tiny_job()))
    status = {
        "jobId": job_id,
        "state": state,
        "kind": "testpattern",
        "attempt": 1,
        "maxAttempts": 3,
        "submittedAt": "2026-06-01T00:00:00Z",
        "updatedAt": "2026-06-01T00:00:00Z",
        **extra,
    }
    (job_dir / "status.json").write_text(json.dumps(status))
    return job_dir


def test_a_dead_workers_running_job_is_adopted_and_a_cancel_while_queued_ends_it(
    daemon: Daemon,
) -> None:
    # Given a running job of a dead worker, and no free slot here
    job_folder(daemon, "orphan", "running", startedAt="2026-06-01T00:00:00Z")
    daemon.table.max_jobs = 0
    # When the loop turns once
    daemon.step(clocks(0))
    # Then it is ours, queued for attempt 2 (worker_lost), waiting for a slot
    status = read_status(daemon.layout, "orphan")
    assert status is not None and status.state is State.QUEUED
    assert status.attempt == 2 and status.error is not None
    assert status.error.code == "worker_lost"
    assert "orphan" in daemon.table.waiting
    # When the client cancels it while it waits
    (daemon.layout.job_dir("orphan") / "cancel").touch()
    daemon.step(clocks(0.1))
    # Then it is cancelled without ever running again
    status = read_status(daemon.layout, "orphan")
    assert status is not None and status.state is State.CANCELLED
    assert status.cancel_requested
    assert "orphan" not in daemon.table.waiting


def test_a_job_waiting_for_a_slot_is_released_as_the_drain_starts(daemon: Daemon) -> None:
    # Given a job of ours that waits for a slot (adopted, none free), and one still running
    job_folder(daemon, "adopted", "running", startedAt="2026-06-01T00:00:00Z")
    daemon.table.max_jobs = 0
    daemon.step(clocks(0))
    assert "adopted" in daemon.table.waiting
    loaded = load_job(json.dumps(tiny_job()).encode(), daemon.settings)
    status = new_status("busy", State.QUEUED, now=T0, submitted_at=T0, worker=None, max_attempts=3)
    daemon.table.running["busy"] = JobHandle("busy", loaded.spec, loaded.kind, status, 0.0)
    # When the daemon is asked to stop, and the loop turns once
    daemon.request_stop()
    assert daemon.step(clocks(0.1)) is not None  # draining: the running job goes on
    # Then the waiting job is released at once, for another daemon to take, not at the end
    assert "adopted" not in daemon.table.waiting
    assert daemon.layout.owner_file("adopted", RELEASED).exists()
    assert "busy" in daemon.table.running


class _RemoteOutputs:
    """Outputs whose roll forward talks to remote storage: "down*" jobs fail as an
    unreachable storage would (transient) once `fail` is set, the others wait until
    `release` is."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.fail = threading.Event()
        self.release = threading.Event()

    def remote_roll_forward(self, status: object) -> bool:
        return True

    def roll_forward(self, job_id: str, status: object) -> RolledForward:
        self.started.append(job_id)
        if job_id.startswith("down"):
            self.fail.wait(20)
            raise JobError(ErrorCode.STORAGE_FAILED, "storage unreachable")
        self.release.wait(20)
        return RolledForward(False)


def test_a_remote_roll_forward_waiting_for_its_retry_holds_no_worker(daemon: Daemon) -> None:
    from spooler.recovery import REMOTE_WORKERS

    # Given as many dead workers' jobs with an upload to finish as there are remote
    # workers, on a storage that does not answer: each worker runs one
    intake = daemon.intake
    assert isinstance(intake, InboxIntake)
    outputs = _RemoteOutputs()
    intake.recovery.outputs = outputs  # type: ignore[assignment]
    down = [f"down{i}" for i in range(REMOTE_WORKERS)]
    for job_id in down:
        job_folder(daemon, job_id, "running", startedAt="2026-06-01T00:00:00Z")
    daemon.table.max_jobs = 0
    try:
        daemon.step(clocks(0))
        _wait_until(lambda: sorted(outputs.started) == down)
        # When they fail and wait for their retry (a backoff of seconds), and another such
        # job turns up before recovery passes again
        outputs.fail.set()
        _wait_until(lambda: all(w.done.is_set() for w in intake.recovery._remote.values()))
        job_folder(daemon, "later", "running", startedAt="2026-06-01T00:00:00Z")
        daemon.timers.recovery = 0
        daemon.step(clocks(0.5))
        # Then it is started now, not after their retries
        _wait_until(lambda: "later" in outputs.started)
        assert sorted(outputs.started) == sorted([*down, "later"])
    finally:
        outputs.fail.set()
        outputs.release.set()


def _wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_fencing_drops_a_job_whose_owner_token_was_taken(daemon: Daemon) -> None:
    job_dir = job_folder(daemon, "taken", "running")
    (job_dir / f".owner.{DEAD}").rename(job_dir / ".owner.someone-else-1-abcdef")
    loaded = load_job(json.dumps(tiny_job()).encode(), daemon.settings)
    status = read_status(daemon.layout, "taken")
    assert status is not None
    handle = JobHandle("taken", loaded.spec, loaded.kind, status, deadline=0.0)
    daemon.table.running["taken"] = handle
    daemon.step(clocks(0))
    assert handle.lost.is_set()


def test_retention_deletes_finished_jobs_by_the_wall_clock_and_rejected_entries_by_the_server(
    daemon: Daemon,
) -> None:
    job_folder(daemon, "old", "succeeded", finishedAt="2026-06-01T00:00:00Z")
    rejected = daemon.layout.rejected / "20260601T000000Z-abcdef-x.json"
    rejected.write_text("{}")
    (daemon.layout.rejected / (rejected.name + ".error.json")).write_text("{}")
    server_now = rejected.stat().st_mtime
    daemon.table.max_jobs = 0
    # A day later nothing is old enough.
    daemon.step(clocks(10, days=1, server=server_now + 86400))
    assert daemon.layout.job_dir("old").exists() and rejected.exists()
    # Eight days after it finished (succeeded: 7) it goes; rejected/ goes after 14 days by
    # the file server's clock, whatever the wall clock says.
    daemon.timers.retention = 0
    daemon.step(clocks(20, days=8, server=server_now + 86400))
    assert not daemon.layout.job_dir("old").exists()
    assert rejected.exists()
    daemon.timers.retention = 0
    daemon.step(clocks(30, days=8, server=server_now + 15 * 86400))
    assert not rejected.exists()
    assert [n for n in os.listdir(daemon.layout.rejected) if not n.startswith(".")] == []


def test_an_inbox_file_is_claimed_only_once_it_has_settled(daemon: Daemon) -> None:
    daemon.table.max_jobs = 0  # claim, but do not run: the decision is what is tested
    inbox_file = daemon.layout.inbox_job("fresh")
    inbox_file.write_text(json.dumps(tiny_job()))
    (daemon.layout.inbox / "fresh.cancel").touch()  # claimed straight into cancelled
    daemon.step(clocks(0))
    assert inbox_file.exists()  # seen for the first time: not settled yet
    daemon.timers.scan = 0
    daemon.step(clocks(0.5))
    assert inbox_file.exists()
    daemon.timers.scan = 0
    daemon.step(clocks(1.2))
    assert not inbox_file.exists()
    status = read_status(daemon.layout, "fresh")
    assert status is not None and status.state is State.CANCELLED


def test_a_file_found_ready_earlier_is_not_claimed_while_a_writer_has_it_open(
    tmp_path: Path,
) -> None:
    """Readiness is remembered between passes (no probe of every waiting file on every
    pass), but a file found complete before it settled is asked again right before its
    claim: a writer that opened it again in between keeps it in the inbox."""
    settings = Settings(
        spool_dir=tmp_path / "spool", media_roots=[tmp_path / "media"], max_jobs=1,
        settle_seconds=60.0, inbox_check="auto",
    )  # fmt: skip
    made = Daemon(settings, me=WorkerIdentity.current("leasetest"))
    ensure_layout(made.layout)
    intake = made.intake
    assert isinstance(intake, InboxIntake)
    if not leases_work(made.layout.inbox):
        pytest.skip("no read leases on this file system")
    intake.use_leases = True
    for job_id, priority in (("first", 5), ("second", 1)):
        made.layout.inbox_job(job_id).write_text(json.dumps(tiny_job(priority=priority)))
    second = made.layout.inbox_job("second")
    with structlog.testing.capture_logs():
        taken = intake.take(clocks(0))  # both complete (lease + parse); one slot: "first"
        assert [h.job_id for h in taken] == ["first"]
        assert intake._seen["second.json"].ready
        writer = subprocess.Popen(
            [sys.executable, "-c", f"f = open({str(second)!r}, 'a'); import time; time.sleep(30)"]
        )  # opened for writing again, nothing written yet: the file looks the same
        try:
            deadline = time.monotonic() + 5
            while open_for_writing_elsewhere(second) is not True and time.monotonic() < deadline:
                time.sleep(0.05)
            assert intake.take(clocks(1)) == []
            assert second.exists()
        finally:
            writer.kill()
            writer.wait()
        assert [h.job_id for h in intake.take(clocks(2))] == ["second"]


def test_the_inbox_is_read_again_only_for_an_event_or_a_job_left_behind(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spooler.intake import inbox

    intake = daemon.intake
    assert isinstance(intake, InboxIntake)
    passes: list[int] = []
    scan = inbox.scan_inbox
    monkeypatch.setattr(inbox, "scan_inbox", lambda layout: passes.append(1) or scan(layout))
    # Given a pass over an empty inbox, with a slot free
    intake.take(clocks(0), rescan=True)
    intake.watcher.changed.clear()  # no event (the fixture's watcher is not started)
    # When the loop turns again without the rescan: no pass
    intake.take(clocks(0.1), rescan=False)
    assert len(passes) == 1
    # Given a job file the pass leaves behind (not settled yet)
    daemon.layout.inbox_job("fresh").write_text(json.dumps(tiny_job()))
    intake.take(clocks(0.2), rescan=True)
    assert daemon.layout.inbox_job("fresh").exists()
    # Then the next turns look again, and take it once it has settled
    intake.take(clocks(0.3), rescan=False)
    assert len(passes) == 3
    assert [h.job_id for h in intake.take(clocks(1.5), rescan=False)] == ["fresh"]


def test_memory_of_inbox_entries_is_pruned_when_they_go(daemon: Daemon) -> None:
    for index in range(5):
        daemon.layout.inbox_job(f"p{index}").write_text(json.dumps(tiny_job(priority=index)))
    daemon.step(clocks(0))
    daemon.timers.scan = 0
    daemon.step(clocks(5))  # settled; one slot, five candidates: priorities read, one claimed
    assert len(daemon.intake._priorities) == 5
    assert "p4" in daemon.table.running  # the highest priority first
    for path in daemon.layout.inbox.iterdir():
        path.unlink()
    daemon.timers.scan = 0
    daemon.step(clocks(6))
    assert daemon.intake._priorities == {}
    assert daemon.intake._seen == {}


def test_odd_entries_in_rejected_and_deep_trees_in_trash_never_stop_retention(
    daemon: Daemon,
) -> None:
    # Given a folder named like an error file, a 1,200-deep tree in trash/ and an old entry
    (daemon.layout.rejected / "odd.error.json").mkdir()
    old = daemon.layout.rejected / "20260101T000000Z-abcdef-old.json"
    old.write_text("{}")
    (daemon.layout.rejected / (old.name + ".error.json")).write_text("{}")
    deep = daemon.layout.trash / "t"
    deep.mkdir()
    cwd = os.getcwd()
    os.chdir(deep)  # build it relative: the absolute path would pass PATH_MAX
    try:
        for _ in range(1200):
            os.mkdir("a")
            os.chdir("a")
    finally:
        os.chdir(cwd)
    daemon.table.max_jobs = 0
    # When retention runs long after (each pass within its time budget, as often as needed)
    server = old.stat().st_mtime + 30 * 86400
    for turn in range(100):
        daemon.step(clocks(turn, days=30, server=server))
        if not os.listdir(daemon.layout.trash) and not os.listdir(daemon.layout.rejected):
            break
        daemon.timers.retention = 0
    # Then the old entry, the odd folder and the deep tree are gone
    assert sorted(os.listdir(daemon.layout.rejected)) == []
    assert os.listdir(daemon.layout.trash) == []


def test_thousands_of_strays_do_not_starve_the_claim(daemon: Daemon) -> None:
    for index in range(3000):
        (daemon.layout.inbox / f"stray{index}").touch()
    daemon.layout.inbox_job("good").write_text(json.dumps(tiny_job()))
    daemon.step(clocks(0))
    daemon.timers.scan = 0
    daemon.step(clocks(2))  # settled: claimed in this pass, whatever the strays
    assert "good" in daemon.table.running or read_status(daemon.layout, "good") is not None
    left = [n for n in os.listdir(daemon.layout.inbox) if n.startswith("stray")]
    assert len(left) > 2000  # strays wait for later passes: at most 100 moved per pass


def test_junk_in_claims_is_quarantined_over_several_passes(daemon: Daemon) -> None:
    for index in range(3000):
        (daemon.layout.claims / f"x{index}").touch()
    daemon.table.max_jobs = 0
    daemon.step(clocks(0))
    left = len(os.listdir(daemon.layout.claims))
    assert 0 < left < 3000  # the pass stopped at its budget and came back to the loop
    for turn in range(1, 200):
        if not os.listdir(daemon.layout.claims):
            break
        daemon.timers.recovery = 0
        daemon.step(clocks(turn))
    assert os.listdir(daemon.layout.claims) == []
    moved = [n for n in os.listdir(daemon.layout.rejected) if n.endswith(".error.json")]
    assert len(moved) == 3000


def test_a_job_that_has_encoded_frees_its_slot_but_publishers_are_bounded(
    tmp_path: Path,
) -> None:
    # Given a table of two slots
    table = JobTable(SpoolLayout(tmp_path), max_jobs=2)
    loaded = load_job(json.dumps(tiny_job()).encode(), Settings(spool_dir=tmp_path))
    status = new_status("job", State.QUEUED, now=T0, submitted_at=T0, worker=None, max_attempts=1)
    handles = [
        JobHandle(f"job-{i}", loaded.spec, loaded.kind, status, deadline=0.0) for i in range(4)
    ]
    for handle in handles[:2]:
        table.running[handle.job_id] = handle
    assert table.free_slots() == 0  # both encode
    # When one has encoded (it checks and publishes its outputs), its slot is free
    handles[0].encoded.set()
    assert table.free_slots() == 1
    table.running[handles[2].job_id] = handles[2]
    handles[1].encoded.set()
    handles[2].encoded.set()
    # Then three publish, one encodes: one more may start (2 encoding, 2 publishing) ...
    table.running[handles[3].job_id] = handles[3]
    assert table.free_slots() == 0
    # ... and with four publishing at once no slot is free even though none encodes
    handles[3].encoded.set()
    assert table.free_slots() == 0
    del table.running[handles[0].job_id]
    assert table.free_slots() == 1


def test_a_job_that_has_encoded_lets_the_next_start_go_first() -> None:
    woken: list[int] = []
    # With no job waiting for the slot, it goes on at once (and wakes the loop)
    SlotSignals(lambda: woken.append(1), waiting=lambda: False).slot_freed()
    assert woken == [1]
    # With one waiting and no ffmpeg started, it waits YIELD_SECONDS, no longer
    signals = SlotSignals(lambda: woken.append(2), waiting=lambda: True)
    began = time.monotonic()
    signals.slot_freed()
    assert time.monotonic() - began >= SlotSignals.YIELD_SECONDS
    # ... and it goes on as soon as the next ffmpeg has started
    signals.YIELD_SECONDS = 60.0
    freed = threading.Thread(target=signals.slot_freed)
    freed.start()
    time.sleep(0.05)
    assert freed.is_alive()  # still letting the next start go first
    signals.ffmpeg_started()
    freed.join(timeout=5)
    assert not freed.is_alive()
    assert woken == [1, 2, 2, 2]


class _PublishesThenFails:
    """A kind that publishes one output, which a client then replaces by a folder, and
    fails for good on the second."""

    name = "testpattern"

    def run(self, spec: object, ctx: Any) -> None:
        from spooler.status import OutputInfo

        ctx.declare_outputs(["a.mp4", "b.mp4"])
        temp = ctx.temp_path("a.mp4")
        temp.write_bytes(b"x" * 10)
        ctx.publish(temp, "a.mp4", OutputInfo(path="a.mp4", size_bytes=10))
        published = ctx.job_dir / "a.mp4"
        published.unlink()
        (published / "theirs").mkdir(parents=True)  # the client's doing
        raise JobError(ErrorCode.VERIFY_FAILED, "the second output failed verification")


def test_a_failed_attempt_that_cannot_withdraw_an_output_still_ends_and_frees_its_slot(
    daemon: Daemon,
) -> None:
    # Given a job whose attempt fails after its published output became a client's folder
    claim = daemon.layout.claim_file("odd", daemon.me.id)
    claim.write_text(json.dumps(tiny_job(maxAttempts=1)))
    handle = daemon.intake.establish("odd", claim, T0, T0, start=True)
    assert handle is not None
    handle.kind = _PublishesThenFails()  # type: ignore[assignment]
    daemon.pool.start(handle, clocks(2))
    # When the loop turns until the attempt is over
    for turn in range(100):
        if "odd" not in daemon.table.running:
            break
        daemon.step(clocks(2.1 + turn / 10))
        time.sleep(0.02)
    # Then the slot is free again, the job failed (on disk too), and the folder is left
    assert "odd" not in daemon.table.running and daemon.table.free_slots() == 1
    status = read_status(daemon.layout, "odd")
    assert status is not None and status.state is State.FAILED
    assert status.error is not None and status.error.code == ErrorCode.VERIFY_FAILED
    assert (daemon.layout.job_dir("odd") / "a.mp4" / "theirs").is_dir()
    # And a stop ends the loop at once (nothing runs)
    daemon.request_stop()
    assert daemon.step(clocks(20)) is None


def test_spool_folders_removed_by_hand_are_made_again(daemon: Daemon) -> None:
    # Given claims/ and jobs/ removed by hand, and a job dropped into the inbox
    daemon.layout.claims.rmdir()
    daemon.layout.jobs.rmdir()
    daemon.layout.inbox_job("back").write_text(json.dumps(tiny_job()))
    # When the rescans run
    daemon.step(clocks(0))
    daemon.timers.scan = 0
    daemon.step(clocks(2))
    # Then the folders are there again and the job was claimed, as if nothing had happened
    assert daemon.layout.claims.is_dir() and daemon.layout.jobs.is_dir()
    assert read_status(daemon.layout, "back") is not None
    assert not daemon.layout.inbox_job("back").exists()
    assert list(daemon.layout.rejected.iterdir()) == []


def test_a_removed_inbox_is_made_again_and_the_loop_goes_on(daemon: Daemon) -> None:
    # Given a watcher on the inbox, and the inbox removed by hand
    daemon.intake.start()
    daemon.layout.inbox.rmdir()
    # When the loop turns until the watcher has noticed (its observer ends with the folder)
    for turn in range(50):
        daemon.step(clocks(turn / 10))
        if daemon.layout.inbox.is_dir():
            break
        time.sleep(0.1)
    # Then the inbox is back and a job dropped into it is claimed
    assert daemon.layout.inbox.is_dir()
    daemon.layout.inbox_job("later").write_text(json.dumps(tiny_job()))
    daemon.timers.scan = 0
    daemon.step(clocks(10))
    daemon.timers.scan = 0
    daemon.step(clocks(12))
    assert read_status(daemon.layout, "later") is not None


def test_a_priority_above_the_limit_is_clamped_on_every_pass(daemon: Daemon) -> None:
    intake = daemon.intake
    assert isinstance(intake, InboxIntake)
    daemon.layout.inbox_job("loud").write_text(json.dumps(tiny_job(priority=1000)))
    (item,) = scan_inbox(daemon.layout)
    ceiling = daemon.settings.limits.max_priority
    assert [intake._priority_of(item) for _ in range(3)] == [ceiling] * 3


def test_a_status_that_cannot_be_written_is_tried_again_less_and_less_often(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a status (a retry's) kept in memory by a disk that refuses every write
    job_folder(daemon, "stuck", "running")
    (daemon.layout.job_dir("stuck") / f".owner.{daemon.me.id}").touch()
    loaded = load_job(json.dumps(tiny_job()).encode(), daemon.settings)
    status = new_status("stuck", State.QUEUED, now=T0, submitted_at=T0, worker=None, max_attempts=3)
    handle = JobHandle("stuck", loaded.spec, loaded.kind, status, 0.0)
    handle.saved = False
    daemon.table.unsaved["stuck"] = handle
    tries: list[float] = []

    def refuse(previous: object, status: object, **_: object) -> None:
        tries.append(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(daemon.pool.reporter, "write", refuse)
    # When the loop turns every 0.1 s for 10 s
    for turn in range(100):
        daemon.pool.flush_unsaved(clocks(turn / 10))
    # Then it was tried at 0, 1, 3 and 7 s (the wait doubles), not on every turn
    assert len(tries) == 4 and "stuck" in daemon.table.unsaved
    # And once the disk has room, the next try writes it and forgets it
    monkeypatch.undo()
    daemon.pool.flush_unsaved(clocks(60))
    assert "stuck" not in daemon.table.unsaved and handle.saved
    on_disk = read_status(daemon.layout, "stuck")
    assert on_disk is not None and on_disk.state is State.QUEUED


def test_a_half_established_job_is_left_to_its_claims_recovery_and_then_runs(
    tmp_path: Path,
) -> None:
    def daemon_named(name: str) -> Daemon:
        settings = Settings(
            spool_dir=tmp_path / "spool",
            media_roots=[tmp_path / "media"],
            max_jobs=1,
            inbox_check="settle",
        )
        made = Daemon(settings, me=WorkerIdentity.current(name))
        ensure_layout(made.layout)
        return made

    with structlog.testing.capture_logs():
        ours, peer = daemon_named("ours"), daemon_named("peer")
        layout = ours.layout
        # Given a worker that died between claim steps 4 and 5 (its folder made, with its
        # token and a queued status, but no job.json), whose claim a live peer has just
        # taken (renamed to its own name: recovery's first step)
        layout.job_dir("half").mkdir()
        (layout.job_dir("half") / f".owner.{DEAD}").touch()
        status = new_status(
            "half", State.QUEUED, now=T0, submitted_at=T0, worker=None, max_attempts=3
        )
        layout.status_file("half").write_text(json.dumps(status.to_json()))
        layout.claim_file("half", peer.me.id).write_text(json.dumps(tiny_job()))
        for daemon in (ours, peer):
            daemon._beat("running", clocks(0))
        # When our recovery pass runs in between
        assert ours.intake.recovery.run(clocks(0)) == []
        # Then the job is untouched: still queued, no error, nothing rejected
        after = read_status(layout, "half")
        assert after is not None and after.state is State.QUEUED and after.error is None
        # And when the peer's recovery goes on with its claim, the job is established
        handles = peer.intake.recovery.run(clocks(0.1))
        assert [h.job_id for h in handles] == ["half"]
        assert layout.job_file("half").is_file()
        assert list(layout.rejected.iterdir()) == []


def test_a_marker_that_is_a_folder_is_set_aside_once_not_failed_on_every_pass(
    daemon: Daemon,
) -> None:
    # Given a cancelled job, and a folder (with a client's file in it) named as its cancel
    # marker in the inbox
    job_dir = job_folder(daemon, "gone", "cancelled", finishedAt="2026-06-01T00:00:00Z")
    (job_dir / "cancel").touch()
    marker = daemon.layout.inbox_cancel("gone")
    marker.mkdir()
    (marker / "theirs.txt").write_text("kept")
    # When the inbox is read twice
    for at in (0, 5):
        daemon.timers.scan = 0
        daemon.step(clocks(at))
    # Then the folder was moved to rejected/ with its content and a reason, and is gone
    assert not marker.exists()
    kept = [p for p in daemon.layout.rejected.iterdir() if p.is_dir()]
    assert len(kept) == 1 and (kept[0] / "theirs.txt").read_text() == "kept"
    assert any(p.name.endswith(".error.json") for p in daemon.layout.rejected.iterdir())


def test_a_job_folder_left_without_a_status_by_a_dead_worker_is_failed_with_the_reason(
    daemon: Daemon,
) -> None:
    # Given a dead worker's job whose status.json is gone (a kill -9 amid a recovery that
    # had set an unreadable one aside)
    job_dir = job_folder(daemon, "bare", "running")
    (job_dir / "status.json").unlink()
    # When recovery passes
    daemon.step(clocks(0))
    # Then the job has a final status that says why, and is not run again
    status = read_status(daemon.layout, "bare")
    assert status is not None and status.state is State.FAILED
    assert status.error is not None and "status.json is missing" in status.error.message
    assert "bare" not in daemon.table.running and "bare" not in daemon.table.waiting
