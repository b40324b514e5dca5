"""Several daemons on one spool, kill -9, cancel, and missed watch events: real processes."""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from support import Spool, pid_alive, tiny_job


def _submit_burst(spool: Spool, count: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    staging = spool.layout.inbox
    staging.mkdir(parents=True, exist_ok=True)
    for job_id in ids:
        (staging / f".{job_id}.tmp").write_text(json.dumps(tiny_job(0.1, width=16, height=16)))
    for job_id in ids:  # the burst: all renames back to back
        (staging / f".{job_id}.tmp").rename(staging / f"{job_id}.json")
    return ids


def _wait_all_final(spool: Spool, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    final: dict[str, dict] = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            status = spool.status(job_id)
            if status and status["state"] in ("succeeded", "failed", "cancelled", "rejected"):
                final[job_id] = status
                pending.discard(job_id)
        time.sleep(0.2)
    assert not pending, f"{len(pending)} jobs never finished, e.g. {sorted(pending)[:5]}"
    return final


@pytest.mark.slow
@pytest.mark.parametrize("daemons", [2, 4])
def test_burst_is_claimed_exactly_once_across_daemons(spool: Spool, make_daemon, daemons) -> None:
    # Given several daemons on one spool, two jobs at a time each
    procs = [make_daemon(SPOOLER_MAX_JOBS="2") for _ in range(daemons)]
    # When 200 jobs arrive in a burst
    ids = _submit_burst(spool, 200, f"burst{daemons}")
    final = _wait_all_final(spool, ids, timeout=240)
    # Then every job succeeded, and the daemons' own logs show each claimed exactly once
    assert collections.Counter(s["state"] for s in final.values()) == {"succeeded": 200}
    claims = collections.Counter(
        e["job_id"] for p in procs for e in p.events() if e.get("event") == "job_claimed"
    )
    assert set(claims) == set(ids)
    assert max(claims.values()) == 1
    workers = {s["worker"]["id"] for s in final.values()}
    assert len(workers) >= 2, "the load should spread over the daemons"
    assert spool.temp_leftovers() == []
    assert list(spool.layout.claims.iterdir()) == []


@pytest.mark.slow
def test_kill_9_while_jobs_run_then_restart_loses_nothing(spool: Spool, make_daemon) -> None:
    # Given a daemon in the middle of several jobs
    first = make_daemon(SPOOLER_MAX_JOBS="2")
    ids = [f"crash-{i}" for i in range(6)]
    for job_id in ids:
        spool.submit(job_id, tiny_job(4, realtime=True))
    spool.wait_state(ids[0], "running")
    time.sleep(1.0)
    ffmpeg_pids = _ffmpeg_pids(spool, ids)
    # When it is killed with SIGKILL (no chance to clean up) and started again
    first.kill9()
    # ffmpeg runs in its own session (so cancel can signal its group), yet dies with the
    # daemon: the kernel's parent-death signal leaves no orphan writing into the spool.
    assert ffmpeg_pids
    for pid in ffmpeg_pids:
        _wait_dead(pid)
    second = make_daemon(SPOOLER_MAX_JOBS="2")
    final = _wait_all_final(spool, ids, timeout=90)
    # Then every job ended, exactly once, with no temporary file left
    assert {s["state"] for s in final.values()} == {"succeeded"}
    recovered = [e["job_id"] for e in second.events() if e.get("event") == "job_recovered"]
    assert recovered, "the restarted daemon must recover the interrupted jobs"
    ahead = []
    for job_id in recovered:
        reasons = [h["reason"] for h in final[job_id]["history"] if h["reason"]]
        if reasons == ["taken_over"]:  # claimed ahead of a slot, never started: attempt 1
            ahead.append(job_id)
            assert final[job_id]["attempt"] == 1
        else:  # killed while it ran: attempt 2
            assert reasons == ["worker_lost"]
            assert final[job_id]["attempt"] == 2
    assert len(ahead) <= 1, "a daemon claims at most one job ahead of its slots"
    assert len(ahead) < len(recovered)
    for status in final.values():
        assert sum(1 for h in status["history"] if h["state"] == "succeeded") == 1
        assert len(status["outputs"]) == 1
    assert spool.temp_leftovers() == []
    assert list(spool.layout.claims.iterdir()) == []


def _ffmpeg_pids(spool: Spool, ids: list[str]) -> list[int]:
    pids = []
    for job_id in ids:
        log = spool.layout.log_file(job_id)
        if log.exists():
            pids += [
                int(line.split()[-1])
                for line in log.read_text().splitlines()
                if line.startswith("# ffmpeg pid")
            ]
    return pids


def _wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 2
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), f"ffmpeg {pid} outlived its daemon"


def test_cancel_while_running_kills_ffmpeg_within_two_seconds(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("to-cancel", tiny_job(30, realtime=True))
    spool.wait_for("to-cancel", lambda s: s["state"] == "running" and s["progress"] > 0)
    (pid,) = _ffmpeg_pids(spool, ["to-cancel"])
    assert pid_alive(pid)
    # When the web app drops the cancel marker
    requested = time.monotonic()
    (spool.layout.inbox / ".to-cancel.cancel.tmp").touch()
    (spool.layout.inbox / ".to-cancel.cancel.tmp").rename(spool.layout.inbox / "to-cancel.cancel")
    status = spool.wait_final("to-cancel", timeout=5)
    elapsed = time.monotonic() - requested
    # Then ffmpeg is gone, the state is cancelled within 2 s, nothing partial remains
    assert status["state"] == "cancelled"
    assert elapsed < 2.0, elapsed
    assert not pid_alive(pid)
    assert status["outputs"] == []
    assert [p.name for p in spool.layout.job_dir("to-cancel").iterdir() if p.suffix == ".mp4"] == []
    assert spool.temp_leftovers() == []


def test_cancel_marker_inside_the_job_folder_works_too(spool: Spool, make_daemon) -> None:
    make_daemon()
    spool.submit("cancel-in-folder", tiny_job(30, realtime=True))
    spool.wait_state("cancel-in-folder", "running")
    spool.layout.job_cancel("cancel-in-folder").touch()
    assert spool.wait_final("cancel-in-folder", timeout=5)["state"] == "cancelled"


def test_cancel_while_queued_never_starts(spool: Spool, make_daemon) -> None:
    # Given one slot, busy with a long job, and a second job waiting in the inbox
    make_daemon(SPOOLER_MAX_JOBS="1")
    spool.submit("busy", tiny_job(30, realtime=True))
    spool.wait_state("busy", "running")
    spool.submit("waiting", tiny_job())
    time.sleep(0.5)
    assert spool.status("waiting") is None  # not claimed: no free slot
    # When it is cancelled
    (spool.layout.inbox / "waiting.cancel").touch()
    status = spool.wait_final("waiting", timeout=5)
    # Then it is cancelled without ever running, and its file is kept
    assert status["state"] == "cancelled"
    assert [h["state"] for h in status["history"]] == ["cancelled"]
    assert status["startedAt"] is None
    assert spool.layout.job_file("waiting").exists()
    assert not spool.layout.log_file("waiting").exists()
    assert spool.status("busy")["state"] == "running"
    spool.layout.job_cancel("busy").touch()
    spool.wait_final("busy", timeout=5)


def test_a_publishing_job_frees_its_slot_for_the_next_encode(spool: Spool, make_daemon) -> None:
    # Given one slot and a storage that takes 2 s to publish each output
    make_daemon(SPOOLER_MAX_JOBS="1", extra_env={"SPOOLER_FAULT_PUBLISH_PAUSE": "2"})
    ids = ["first", "second", "third"]
    for job_id in ids:
        spool.submit(job_id, tiny_job(0.2, width=16, height=16))
    final = _wait_all_final(spool, ids, timeout=30)
    assert {s["state"] for s in final.values()} == {"succeeded"}
    first, second, third = (final[i] for i in ids)

    def at(status: dict, key: str) -> datetime:
        return datetime.fromisoformat(status[key].replace("Z", "+00:00"))

    # Then the second job ran while the first was publishing (its slot was free) ...
    assert at(first, "startedAt") < at(second, "startedAt") < at(first, "finishedAt")
    # ... and the third waited: at most max_jobs jobs publish beside the encodes
    assert at(third, "startedAt") >= at(first, "finishedAt")


def test_alone_a_daemon_claims_one_job_ahead_as_its_encode_nears_its_end(
    spool: Spool, make_daemon
) -> None:
    # Given a daemon alone on the spool, one slot, busy with an 8 s encode
    daemon = make_daemon(SPOOLER_MAX_JOBS="1")
    spool.submit("busy", tiny_job(8, realtime=True))
    spool.wait_state("busy", "running")
    # When two more jobs arrive
    spool.submit("next", tiny_job(0.2, width=16, height=16))
    spool.submit("later", tiny_job(0.2, width=16, height=16))
    # Then neither is claimed while the encode has more than claim_ahead_seconds (2) to go
    time.sleep(2.0)
    assert spool.status("next") is None and spool.status("later") is None
    # ... one is claimed ahead before the busy job ends, and waits, queued, for the slot
    claimed = spool.wait_for("next", lambda s: True, timeout=10)
    assert claimed["state"] == "queued"
    assert spool.status("busy")["state"] == "running"
    assert spool.status("later") is None  # one ahead at most
    final = _wait_all_final(spool, ["busy", "next", "later"], timeout=30)
    assert {s["state"] for s in final.values()} == {"succeeded"}
    assert final["next"]["attempt"] == 1
    claims = [e for e in daemon.events() if e.get("event") == "job_claimed"]
    # ("later" may be claimed ahead of "next"'s short encode in turn)
    assert [(e["job_id"], e.get("ahead", False)) for e in claims[:2]] == [
        ("busy", False),
        ("next", True),
    ]
    assert [e["job_id"] for e in claims[2:]] == ["later"]


def test_with_a_live_peer_no_job_is_claimed_ahead(spool: Spool, make_daemon) -> None:
    # Given two daemons, one slot each, both busy with a 3 s encode
    daemons = [make_daemon(SPOOLER_MAX_JOBS="1") for _ in range(2)]
    for job_id in ("busy-1", "busy-2"):
        spool.submit(job_id, tiny_job(3, realtime=True))
    spool.wait_state("busy-1", "running")
    spool.wait_state("busy-2", "running")
    # When more jobs arrive while both encodes near their end
    ids = [f"short-{i}" for i in range(4)]
    for job_id in ids:
        spool.submit(job_id, tiny_job(0.2, width=16, height=16))
    final = _wait_all_final(spool, ["busy-1", "busy-2", *ids], timeout=30)
    assert {s["state"] for s in final.values()} == {"succeeded"}
    # Then none was claimed ahead of a free slot: an idle peer may always take it
    claims = [e for d in daemons for e in d.events() if e.get("event") == "job_claimed"]
    assert len(claims) == 6
    assert not [e for e in claims if e.get("ahead")]


def test_delete_marker_removes_a_finished_job_and_cancels_an_active_one(
    spool: Spool, make_daemon
) -> None:
    make_daemon()
    spool.submit("done", tiny_job())
    spool.wait_final("done")
    (spool.layout.inbox / "done.delete").touch()
    spool.submit("active", tiny_job(30, realtime=True))
    spool.wait_state("active", "running")
    (spool.layout.inbox / "active.delete").touch()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        spool.layout.job_dir("done").exists() or spool.layout.job_dir("active").exists()
    ):
        time.sleep(0.05)
    assert not spool.layout.job_dir("done").exists()
    assert not spool.layout.job_dir("active").exists()
    assert list(spool.layout.inbox.iterdir()) == []


def test_retention_deletes_old_finished_jobs_only(spool: Spool, make_daemon) -> None:
    # 0.00002 days is 1.7 s: the finished job goes, the running one stays.
    make_daemon(
        SPOOLER_RETENTION__SUCCEEDED_DAYS="0.00002", SPOOLER_RETENTION__INTERVAL_SECONDS="0.5"
    )
    spool.submit("old", tiny_job())
    spool.wait_final("old")
    spool.submit("running", tiny_job(30, realtime=True))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and spool.layout.job_dir("old").exists():
        time.sleep(0.1)
    assert not spool.layout.job_dir("old").exists()
    assert spool.status("running")["state"] == "running"
    spool.layout.job_cancel("running").touch()
    spool.wait_final("running")


def test_jobs_flow_when_the_observer_thread_dies(spool: Spool, make_daemon) -> None:
    # Given a watchdog handler that raises (which kills watchdog's dispatcher silently)
    daemon = make_daemon(SPOOLER_FAULT_OBSERVER_CRASH_AFTER="0")
    spool.submit("first", tiny_job())
    assert spool.wait_final("first")["state"] == "succeeded"
    # Then the supervisor restarts the observer, and later jobs still flow
    daemon.wait_event("watcher_dead_restarting")
    spool.submit("second", tiny_job())
    assert spool.wait_final("second")["state"] == "succeeded"


def test_files_placed_while_no_daemon_runs_are_picked_up(spool: Spool, make_daemon) -> None:
    # No observer at all when these land: only the startup scan can find them.
    for i in range(3):
        spool.submit(f"early-{i}", tiny_job())
    make_daemon()
    for i in range(3):
        assert spool.wait_final(f"early-{i}")["state"] == "succeeded"


def test_polling_mode_without_inotify(spool: Spool, make_daemon) -> None:
    daemon = make_daemon(SPOOLER_WATCH_MODE="polling", SPOOLER_RESCAN_SECONDS="30")
    assert daemon.wait_event("daemon_started")["watcher"] == "polling"
    spool.submit("polled", tiny_job())
    # The 30 s rescan is out of reach: the polling observer must have seen it.
    assert spool.wait_final("polled", timeout=10)["state"] == "succeeded"


def test_inotify_unavailable_falls_back_and_keeps_working(spool: Spool, make_daemon) -> None:
    limit = Path("/proc/sys/fs/inotify/max_user_instances")
    try:
        original = limit.read_text()
        limit.write_text("0\n")
    except OSError:
        pytest.skip("cannot lower fs.inotify.max_user_instances here (needs root)")
    try:
        daemon = make_daemon()
        started = daemon.wait_event("daemon_started")
    finally:
        limit.write_text(original)
    assert started["watcher"] == "polling"
    daemon.wait_event("inotify_unavailable")
    spool.submit("no-inotify", tiny_job())
    assert spool.wait_final("no-inotify")["state"] == "succeeded"


def test_a_paused_daemon_that_lost_its_lease_touches_nothing(spool: Spool, make_daemon) -> None:
    fast_lease = {"SPOOLER_HEARTBEAT_SECONDS": "0.3", "SPOOLER_LEASE_SECONDS": "1.5"}
    # Given daemon A running a job
    first = make_daemon(**fast_lease)
    spool.submit("contested", tiny_job(4, realtime=True))
    spool.wait_state("contested", "running")
    # When A freezes (SIGSTOP: a stalled host) long enough for B to take the job over
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = make_daemon(**fast_lease)
        taken = spool.wait_for(
            "contested",
            lambda s: s["state"] == "running" and s["worker"]["pid"] == second.pid,
            timeout=15,
        )
        assert taken["attempt"] == 2
    finally:
        os.kill(first.pid, signal.SIGCONT)
    # Then A notices it lost the job, and B's status is never overwritten by A
    first.wait_event("job_ownership_lost")
    workers_seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = spool.status("contested")
        assert status is not None
        workers_seen.add(status["worker"]["pid"])
        if status["state"] == "succeeded":
            break
        time.sleep(0.05)
    assert workers_seen == {second.pid}
    final = spool.status("contested")
    assert final is not None and final["state"] == "succeeded" and final["attempt"] == 2
    assert {h["workerId"] for h in final["history"][-3:]} == {final["worker"]["id"]}
    assert first.proc.poll() is None  # A keeps serving
    assert len(final["outputs"]) == 1
    assert spool.temp_leftovers() == []
