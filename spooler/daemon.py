"""The daemon loop: wires the watcher, the claim protocol, worker threads, heartbeats,
recovery and retention together. Decisions live in pure modules (policy, status, layout);
this module only sequences them.

Shutdown order (first SIGTERM/SIGINT; a second one skips the grace period):
1. stop claiming; tell systemd STOPPING; heartbeat says "stopping";
2. let running jobs finish for up to `shutdown_grace_seconds` (cancels still honoured);
3. stop what still runs: ffmpeg gets SIGTERM then SIGKILL, the job goes back to queued;
4. release ownership of every job we hold so another daemon takes it at once;
5. stop the watcher, delete our heartbeat, exit 0.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from spooler import __version__
from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.ffmpeg import find_ffmpeg
from spooler.fsutil import (
    TEMP_PREFIX,
    FileTooLarge,
    UnsafeFile,
    create_marker,
    is_real_dir,
    leases_work,
    lexists,
    open_for_writing_elsewhere,
    open_log_for_append,
    read_untrusted,
    remove_temp_files,
    remove_tree,
    temp_name_for,
)
from spooler.kinds import decode_job_json, parse_job
from spooler.kinds.base import JobKind, JobSpec
from spooler.layout import EntryKind, SpoolLayout, is_valid_job_id
from spooler.metrics import StatusCache, update_metrics_file
from spooler.notify import SystemdNotifier
from spooler.policy import (
    Candidate,
    clamp_priority,
    effective_max_attempts,
    effective_timeout,
    is_expired,
    order_candidates,
)
from spooler.runner import JobHandle, error_info, run_attempt
from spooler.spool import (
    RELEASED,
    DuplicateJob,
    InboxFile,
    claim,
    ensure_layout,
    establish,
    move_aside,
    ns_to_datetime,
    owner_of,
    printable_name,
    read_job_bytes_for_priority,
    read_status,
    scan_inbox,
    take_ownership,
    write_status,
)
from spooler.status import (
    ErrorInfo,
    JobStatus,
    State,
    new_status,
    transition,
    utcnow,
)
from spooler.watcher import InboxWatcher
from spooler.worker import (
    WORKER_ID_PATTERN,
    WorkerIdentity,
    is_worker_alive,
    read_heartbeats,
    remove_heartbeat,
    write_heartbeat,
)

# Share of a heartbeat period one inbox pass may take before it yields to the loop.
INBOX_PASS_BUDGET = 0.5
# Tries to establish a claim before it is moved aside to rejected/.
CLAIM_ATTEMPTS = 3


@dataclass
class _Seen:
    signature: tuple[int, int, int]
    since: float  # monotonic time the signature was first seen


class Daemon:
    def __init__(self, settings: Settings, *, me: WorkerIdentity | None = None) -> None:
        self.settings = settings
        self.layout = SpoolLayout(settings.spool_dir)
        self.me = me or WorkerIdentity.current(settings.worker_name)
        self.log = structlog.get_logger().bind(worker=self.me.id)
        self.notifier = SystemdNotifier()
        self.wake = threading.Event()
        self.watcher = InboxWatcher(
            self.layout.inbox,
            settings.watch_mode,
            self.wake,
            poll_seconds=min(1.0, settings.rescan_seconds),
        )
        self.running: dict[str, JobHandle] = {}
        self.waiting: dict[str, JobHandle] = {}  # ours, queued (retry backoff or recovered)
        self.done: queue.Queue[JobHandle] = queue.Queue()
        self.unsaved: dict[str, JobHandle] = {}  # final status not yet on disk
        # Final statuses never change: remember (state, finishedAt, folder identity) instead
        # of re-reading. The folder's (inode, ctime) tells a deleted and resubmitted id from
        # the one remembered (an inode alone is reused at once by the next mkdir).
        self.final_jobs: dict[str, tuple[State, datetime | None, tuple[int, int]]] = {}
        # Claims that failed to become a job, by name: retried, then moved aside.
        self._claim_failures: dict[str, int] = {}
        self._seen: dict[str, _Seen] = {}
        self._priorities: dict[str, tuple[tuple[int, int, int], int]] = {}
        self._orphan_markers: dict[str, float] = {}
        self._stop_requests = 0
        self._ffmpeg: str | None = None
        self._server_now = 0.0
        self.started_at = utcnow()
        self._use_leases = False
        self._jobs_mtime = 0
        self._next_full_scan = 0.0
        self._foreign_active: set[str] = set()  # other workers' active jobs, last seen
        self._metrics_cache = StatusCache()  # finished statuses are read once
        self.claimed_count = 0

    # -- plumbing --------------------------------------------------------------------------
    def ffmpeg(self) -> str:
        if self._ffmpeg is None:
            self._ffmpeg = find_ffmpeg(self.settings.ffmpeg_path)
        return self._ffmpeg

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only set flags: the loop does the logging and the work.
        self._stop_requests += 1
        self.wake.set()

    def request_stop(self) -> None:
        self._on_signal(signal.SIGTERM, None)

    def _free_slots(self) -> int:
        return self.settings.max_jobs - len(self.running)

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        ensure_layout(self.layout)
        self._use_leases = self.settings.inbox_check == "auto" and leases_work(self.layout.inbox)
        try:
            self.ffmpeg()
        except JobError as exc:
            # Every job would fail: refuse to start, so systemd or compose show the cause.
            self.log.error("ffmpeg_missing", error=exc.message)
            return 2
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            # The read-lease probe (fsutil.open_for_writing_elsewhere) makes the kernel send
            # SIGIO if a writer opens the file during the probe; its default action kills.
            signal.signal(signal.SIGIO, signal.SIG_IGN)
        self.watcher.start()
        self._beat("running")
        self.log.info(
            "daemon_started",
            version=__version__,
            spool=str(self.layout.root),
            max_jobs=self.settings.max_jobs,
            watcher=self.watcher.kind,
            writer_check="lease" if self._use_leases else "settle",
        )
        self.notifier.ready(f"watching {self.layout.inbox} ({self.watcher.kind})")
        now = time.monotonic()
        next_scan = next_beat = next_recovery = next_metrics = now
        next_retention = now + 5.0
        stop_phase_started: float | None = None
        while True:
            now = time.monotonic()
            woke = self.wake.is_set()
            self.wake.clear()
            self._reap()
            if self._stop_requests and stop_phase_started is None:
                stop_phase_started = now
                self.log.info(
                    "shutdown_started",
                    running=sorted(self.running),
                    grace_seconds=self.settings.shutdown_grace_seconds,
                )
                self.notifier.stopping("draining running jobs")
                self._beat("stopping")
            if stop_phase_started is not None:
                grace_over = now - stop_phase_started >= self.settings.shutdown_grace_seconds
                if self._stop_requests > 1 or grace_over:
                    self._stop_running_jobs()
                if not self.running:
                    break
            if not self.watcher.healthy() and stop_phase_started is None:
                self.log.warning("watcher_dead_restarting", restarts=self.watcher.restarts + 1)
                self.watcher.restart()
                woke = True
            if now >= next_beat:
                self._beat("stopping" if stop_phase_started else "running")
                next_beat = now + self.settings.heartbeat_seconds
            self._guarded(self._check_cancels)
            if self.unsaved:
                self._guarded(self._flush_unsaved)
            if stop_phase_started is None:
                self._guarded(self._start_waiting)  # retries first: they waited longest
                if woke or now >= next_scan:
                    self._guarded(self._process_inbox)
                    next_scan = now + self.settings.rescan_seconds
                if now >= next_recovery:
                    self._guarded(self._recover)
                    next_recovery = now + self.settings.heartbeat_seconds
                if self.settings.metrics_file is not None and now >= next_metrics:
                    self._guarded(self._write_metrics)
                    next_metrics = now + self.settings.metrics_interval_seconds
                if now >= next_retention:
                    self._guarded(self._retention)
                    next_retention = now + self.settings.retention.interval_seconds
            busy = self.running or self.waiting or stop_phase_started is not None
            timeout = (
                self.settings.tick_seconds
                if busy
                else min(self.settings.rescan_seconds, self.settings.heartbeat_seconds)
            )
            self.wake.wait(timeout)
        self._shutdown()
        return 0

    def _guarded(self, phase: Callable[[], None]) -> None:
        """One phase of the loop; a failure (a full or read-only disk, a vanished folder)
        is logged and retried on the next turn, never allowed to stop the daemon."""
        try:
            phase()
        except Exception:
            self.log.exception("loop_phase_failed", phase=phase.__name__.lstrip("_"))

    def _write_metrics(self) -> None:
        assert self.settings.metrics_file is not None
        update_metrics_file(self.layout, self.settings.metrics_file, self._metrics_cache)

    def _beat(self, state: str) -> None:
        try:
            self._server_now = write_heartbeat(
                self.layout,
                self.me,
                started_at=self.started_at,
                now=utcnow(),
                running=sorted(self.running),
                max_jobs=self.settings.max_jobs,
                state=state,
                heartbeat_seconds=self.settings.heartbeat_seconds,
                lease_seconds=self.settings.lease_seconds,
            )
        except OSError as exc:
            self.log.error("heartbeat_failed", error=str(exc))
            return
        self.notifier.watchdog()
        self.notifier.status(
            f"{len(self.running)} running, {len(self.waiting)} waiting, "
            f"{self.claimed_count} claimed since start"
        )

    def _shutdown(self) -> None:
        for job_id in list(self.waiting):
            take_ownership(self.layout, job_id, self.me.id, RELEASED)
        self.waiting.clear()
        self.watcher.stop()
        remove_heartbeat(self.layout, self.me)
        self.log.info("daemon_stopped")

    def _stop_running_jobs(self) -> None:
        for handle in self.running.values():
            if not handle.stop.is_set():
                self.log.info("stopping_job", job_id=handle.job_id)
                handle.stop.set()

    # -- job threads --------------------------------------------------------------------------
    def _start(self, handle: JobHandle) -> None:
        handle.deadline = time.monotonic() + effective_timeout(
            handle.spec.timeout_seconds, self.settings.limits
        )
        thread = threading.Thread(
            target=run_attempt,
            kwargs={
                "handle": handle,
                "layout": self.layout,
                "settings": self.settings,
                "ffmpeg": self.ffmpeg,
                "me": self.me,
                "on_done": self._job_done,
            },
            name=f"job-{handle.job_id}",
            daemon=True,
        )
        handle.thread = thread
        self.running[handle.job_id] = handle
        thread.start()

    def _job_done(self, handle: JobHandle) -> None:
        """Called from the job's thread: hand it back and wake the loop (a slot is free)."""
        self.done.put(handle)
        self.wake.set()

    def _reap(self) -> None:
        while True:
            try:
                handle = self.done.get_nowait()
            except queue.Empty:
                return
            if handle.thread is not None:
                handle.thread.join()
            self.running.pop(handle.job_id, None)
            state = handle.status.state
            if not handle.saved:
                self.unsaved[handle.job_id] = handle
            if handle.lost.is_set():
                pass  # its new owner has it; nothing of ours to record
            elif state is State.QUEUED:
                handle.not_before = _monotonic_due(handle.status.retry_at)
                if self._stop_requests:
                    take_ownership(self.layout, handle.job_id, self.me.id, RELEASED)
                else:
                    handle.cancel.clear()
                    handle.ffmpeg_pids.clear()
                    self.waiting[handle.job_id] = handle
            else:
                self._remember_final(handle.status)
            self.wake.set()

    def _start_waiting(self) -> None:
        now = time.monotonic()
        due = [h for h in self.waiting.values() if h.not_before <= now]
        for handle in sorted(due, key=lambda h: (-h.status.priority, h.status.submitted_at)):
            if self._free_slots() <= 0:
                return
            del self.waiting[handle.job_id]
            self._start(handle)

    # -- inbox ----------------------------------------------------------------------------------
    def _ready(self, item: InboxFile, now: float) -> bool:
        """Fully written? A local writer still holding the file open says no. Where leases
        do not work (NFS, SMB, Docker Desktop mounts) or are switched off, the file must stay
        unchanged for settle_seconds. Either way, a file that does not parse yet and changed
        within settle_seconds is given time (a writer that reopens between chunks)."""
        if not item.is_regular:
            return True
        seen = self._track(item, now)
        settled = now - seen.since >= self.settings.settle_seconds
        if settled:
            return True
        if not self._use_leases or open_for_writing_elsewhere(item.path) is not False:
            return False
        return self._parses(item)

    def _track(self, item: InboxFile, now: float) -> _Seen:
        """Remember since when the file has looked the same (size, mtime, inode)."""
        seen = self._seen.get(item.entry.name)
        if seen is None or seen.signature != item.signature:
            seen = self._seen[item.entry.name] = _Seen(item.signature, now)
        return seen

    def _parses(self, item: InboxFile) -> bool:
        try:
            decode_job_json(read_untrusted(item.path, self.settings.limits.max_job_file_bytes))
        except (JobError, UnsafeFile, OSError):
            return False
        except FileTooLarge:
            return True  # will be rejected for its size, whatever else it holds
        return True

    def _process_inbox(self) -> None:
        now = time.monotonic()
        # Work per pass is bounded so heartbeats and cancels never wait long: what is left
        # is picked up on the next pass (the loop comes back at once while busy).
        budget_ends = now + INBOX_PASS_BUDGET * self.settings.heartbeat_seconds
        items = scan_inbox(self.layout)
        names = {i.entry.name for i in items}
        for gone in set(self._seen) - names:
            del self._seen[gone]
        for gone in set(self._priorities) - names:
            del self._priorities[gone]
        jobs = {i.entry.job_id: i for i in items if i.entry.kind is EntryKind.JOB}
        markers = [i for i in items if i.entry.kind in (EntryKind.CANCEL, EntryKind.DELETE)]
        cancel_requested = {m.entry.job_id for m in markers}
        candidates: list[Candidate] = []
        # Without a free slot, jobs stay in the inbox for another daemon: no need to look
        # at them (a long queue would otherwise be re-read on every event).
        look_at_jobs = self._free_slots() > 0
        for item in items:
            if time.monotonic() >= budget_ends:
                self.wake.set()
                return
            try:
                self._look_at(item, now, look_at_jobs, cancel_requested, candidates)
            except Exception:  # one odd entry must never stop the pass
                self.log.exception("inbox_entry_failed", name=printable_name(item.entry.name))
        for marker in markers:
            if marker.entry.job_id not in jobs:
                try:
                    self._handle_marker(marker, now)
                except Exception:
                    self.log.exception("inbox_entry_failed", name=marker.entry.name)
        free = self._free_slots()
        if free <= 0 or not candidates:
            return
        if len(candidates) > free:
            candidates = [
                Candidate(c.job_id, self._priority_of(jobs[c.job_id]), c.submitted)
                for c in candidates
            ]
            candidates = order_candidates(candidates, self._server_now, self.settings.limits)
        for candidate in candidates:
            if self._free_slots() <= 0 or time.monotonic() >= budget_ends:
                break
            try:
                self._claim_and_start(jobs[candidate.job_id], start=True)
            except Exception:
                self.log.exception("inbox_entry_failed", name=candidate.job_id)

    def _look_at(
        self,
        item: InboxFile,
        now: float,
        look_at_jobs: bool,
        cancel_requested: set[str | None],
        candidates: list[Candidate],
    ) -> None:
        if item.entry.kind is EntryKind.STRAY:
            if self._ready(item, now):
                self._move_stray(item)
        elif item.entry.kind is EntryKind.JOB and item.entry.job_id is not None:
            cancelled = item.entry.job_id in cancel_requested
            if not (look_at_jobs or cancelled):
                self._track(item, now)  # keeps the settle clock running meanwhile
                return
            if not self._ready(item, now):
                return
            if cancelled:
                self._claim_and_start(item, start=False)
            else:
                candidates.append(Candidate(item.entry.job_id, 0, item.ctime_ns / 1e9))

    def _priority_of(self, item: InboxFile) -> int:
        cached = self._priorities.get(item.entry.name)
        if cached and cached[0] == item.signature:
            return cached[1]
        try:
            raw = read_untrusted(item.path, self.settings.limits.max_job_file_bytes)
            priority = read_job_bytes_for_priority(raw)
        except (OSError, UnsafeFile, FileTooLarge):
            priority = 0
        self._priorities[item.entry.name] = (item.signature, priority)
        return clamp_priority(priority, self.settings.limits)

    def _move_stray(self, item: InboxFile) -> None:
        try:
            target = move_aside(
                self.layout,
                item.path,
                ErrorCode.INVALID_ID,
                f"{item.entry.name!r} is not <jobId>.json, <jobId>.cancel or "
                "<jobId>.delete with a valid job id",
                utcnow(),
            )
        except FileNotFoundError:
            return  # another daemon moved it first
        self.log.warning(
            "inbox_entry_moved_aside",
            name=item.entry.name,
            to=target.name,
            code=ErrorCode.INVALID_ID.value,
        )

    def _claim_and_start(self, item: InboxFile, *, start: bool) -> None:
        job_id = item.entry.job_id
        assert job_id is not None
        claim_file = claim(self.layout, job_id, self.me.id)
        if claim_file is None:
            return  # another daemon won the rename
        self.claimed_count += 1
        self.log.info("job_claimed", job_id=job_id)
        self._seen.pop(item.entry.name, None)
        self._establish_claimed(job_id, claim_file, ns_to_datetime(item.ctime_ns), start=start)

    def _establish_claimed(
        self,
        job_id: str,
        claim_file: Path,
        submitted: datetime,
        *,
        start: bool,
        slot_free: bool = True,
    ) -> None:
        now = utcnow()
        spec: JobSpec | None = None
        kind: JobKind | None = None
        error: ErrorInfo | None = None
        try:
            raw = read_untrusted(claim_file, self.settings.limits.max_job_file_bytes)
            spec, kind = parse_job(raw)
        except UnsafeFile as exc:
            error = ErrorInfo(code=ErrorCode.NOT_A_FILE, message=f"job file {exc}")
        except FileTooLarge as exc:
            error = ErrorInfo(
                code=ErrorCode.TOO_LARGE,
                message=f"job file is {exc}",
                details={"size": exc.size, "limit": exc.limit},
            )
        except JobError as exc:
            error = error_info(exc)
        except OSError as exc:
            error = ErrorInfo(code=ErrorCode.NOT_A_FILE, message=f"job file cannot be read: {exc}")
        cancelled = lexists(self.layout.inbox_cancel(job_id)) or lexists(
            self.layout.inbox_delete(job_id)
        )
        if error is not None:
            state = State.REJECTED
        elif cancelled or not start:
            state = State.CANCELLED
            error = ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled before it started")
        else:
            state = State.QUEUED
        status = new_status(
            job_id,
            state,
            now=now,
            submitted_at=submitted,
            worker=self.me.ref(),
            max_attempts=effective_max_attempts(
                spec.max_attempts if spec else None, self.settings.retry
            ),
            kind=kind.name if kind else None,
            priority=clamp_priority(spec.priority, self.settings.limits) if spec else 0,
            metadata=spec.metadata if spec else {},
            error=error,
        )
        try:
            establish(self.layout, job_id, claim_file, self.me.id, status)
        except (ValueError, TypeError, RecursionError) as exc:
            # The loader refuses what a status cannot carry; should anything still slip
            # through, the job is rejected with a status that holds none of its content.
            error = ErrorInfo(code=ErrorCode.INVALID_JOB, message=f"job cannot be recorded: {exc}")
            state = State.REJECTED
            status = new_status(
                job_id,
                state,
                now=now,
                submitted_at=submitted,
                worker=self.me.ref(),
                max_attempts=1,
                error=error,
            )
            try:
                establish(self.layout, job_id, claim_file, self.me.id, status)
            except DuplicateJob:
                self._reject_duplicate(job_id, claim_file, now)
                return
        except DuplicateJob:
            self._reject_duplicate(job_id, claim_file, now)
            return
        if state is State.REJECTED:
            assert error is not None
            self.log.warning(
                "job_rejected", job_id=job_id, code=error.code.value, message=error.message
            )
        if status.is_final:
            self._remember_final(status)
            self._consume_markers(job_id)
            return
        assert spec is not None and kind is not None
        handle = JobHandle(job_id, spec, kind, status, deadline=0.0)
        if slot_free and self._free_slots() > 0:
            self._start(handle)
        else:
            self.waiting[job_id] = handle

    def _reject_duplicate(self, job_id: str, claim_file: Path, now: datetime) -> None:
        target = move_aside(
            self.layout,
            claim_file,
            ErrorCode.DUPLICATE_ID,
            f"a job with id {job_id!r} already exists",
            now,
            original_name=f"{job_id}.json",
        )
        self.log.warning("job_rejected", job_id=job_id, code="duplicate_id", moved_to=target.name)

    def _consume_markers(self, job_id: str) -> None:
        """A cancel marker in the inbox moves into the job folder (where it stays as a record);
        a delete marker of a finished job removes the job."""
        self._move_cancel_marker(self.layout.inbox_cancel(job_id), job_id)
        if lexists(self.layout.inbox_delete(job_id)) and job_id in self.final_jobs:
            self._delete_job(job_id)
            with contextlib.suppress(FileNotFoundError):
                self.layout.inbox_delete(job_id).unlink()

    def _handle_marker(self, marker: InboxFile, now: float) -> None:
        job_id = marker.entry.job_id
        assert job_id is not None
        job_dir = self.layout.job_dir(job_id)
        if not is_real_dir(job_dir):
            # Unknown job: maybe still being established by another daemon. Give it a lease.
            first = self._orphan_markers.setdefault(marker.entry.name, now)
            if now - first >= self.settings.lease_seconds:
                self._orphan_markers.pop(marker.entry.name, None)
                if marker.entry.kind is EntryKind.DELETE:
                    with contextlib.suppress(FileNotFoundError):
                        marker.path.unlink()  # deleting what is not there is done
                else:
                    with contextlib.suppress(FileNotFoundError):
                        move_aside(
                            self.layout,
                            marker.path,
                            ErrorCode.UNKNOWN_JOB,
                            f"no job {job_id!r} to cancel",
                            utcnow(),
                        )
            return
        self._orphan_markers.pop(marker.entry.name, None)
        if marker.entry.kind is EntryKind.CANCEL:
            self._move_cancel_marker(marker.path, job_id)
            self.wake.set()
            return
        try:
            status = read_status(self.layout, job_id)
        except ValueError:
            return  # unreadable (a newer daemon's format?): never delete what may be active
        if status is None or status.is_final:
            self._delete_job(job_id)
            with contextlib.suppress(FileNotFoundError):
                marker.path.unlink()
        else:
            create_marker(self.layout.job_cancel(job_id))  # delete = cancel, then delete when final

    def _move_cancel_marker(self, marker: Path, job_id: str) -> None:
        """An inbox cancel marker moves into the job folder, where it stays as the record.
        Whatever already stands at jobs/<id>/cancel (a client's own marker, a directory, a
        link) already says "cancel": it is left alone and the inbox marker is dropped."""
        target = self.layout.job_cancel(job_id)
        try:
            if lexists(target):
                marker.unlink()
            else:
                marker.rename(target)
        except FileNotFoundError:
            pass

    def _status_or_none(self, job_id: str) -> JobStatus | None:
        try:
            return read_status(self.layout, job_id)
        except ValueError:
            return None

    def _remember_final(self, status: JobStatus) -> None:
        try:
            info = os.lstat(self.layout.job_dir(status.job_id))
        except OSError:
            return
        identity = (info.st_ino, info.st_ctime_ns)
        self.final_jobs[status.job_id] = (status.state, status.finished_at, identity)

    def _delete_job(self, job_id: str) -> None:
        remove_tree(self.layout.job_dir(job_id), self.layout.trash)
        self.final_jobs.pop(job_id, None)
        self.log.info("job_deleted", job_id=job_id)

    # -- cancel ----------------------------------------------------------------------------------
    def _flush_unsaved(self) -> None:
        for job_id, handle in list(self.unsaved.items()):
            if self._owns(job_id):
                write_status(self.layout, handle.status)
                self.log.info("status_write_recovered", job_id=job_id)
            del self.unsaved[job_id]

    def _owns(self, job_id: str) -> bool:
        return lexists(self.layout.owner_file(job_id, self.me.id))

    def _check_cancels(self) -> None:
        """Cancel markers, and fencing: a job whose owner token is no longer ours was taken
        over while we were presumed dead (a stalled loop, a suspended host); drop it."""
        for handle in self.running.values():
            if not handle.lost.is_set() and not self._owns(handle.job_id):
                self.log.warning("job_ownership_lost", job_id=handle.job_id)
                handle.lost.set()
            if not handle.cancel.is_set() and lexists(self.layout.job_cancel(handle.job_id)):
                self.log.info("job_cancel_requested", job_id=handle.job_id)
                handle.cancel.set()
        for job_id in list(self.waiting):
            if not self._owns(job_id):
                self.log.warning("job_ownership_lost", job_id=job_id)
                del self.waiting[job_id]
            elif lexists(self.layout.job_cancel(job_id)):
                handle = self.waiting.pop(job_id)
                handle.status = transition(
                    handle.status,
                    State.CANCELLED,
                    now=utcnow(),
                    reason="cancelled",
                    error=ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled on request"),
                )
                write_status(self.layout, handle.status)
                self._remember_final(handle.status)
                self.log.info("job_cancelled", job_id=job_id, while_state="queued")

    # -- recovery --------------------------------------------------------------------------------
    def _alive(self, worker_id: str, beats: dict[str, Any]) -> bool:
        if worker_id == RELEASED:
            return False
        return is_worker_alive(
            worker_id,
            beats,
            me=self.me,
            server_now=self._server_now,
            lease_seconds=self.settings.lease_seconds,
            max_lease_seconds=self.settings.max_lease_seconds,
        )

    def _recover(self) -> None:
        """Take over claims and jobs whose worker is dead (or released them).

        Listing jobs/ costs ~2 ms per 1,000 jobs, so it happens only when the folder
        changed (its mtime) and every lease_seconds / 2 as a safety net; in between, only
        the other workers' active jobs seen last time are looked at again.
        """
        beats = read_heartbeats(self.layout)
        self._recover_claims(beats)
        try:
            jobs_mtime = os.stat(self.layout.jobs).st_mtime_ns
        except FileNotFoundError:
            return
        now = time.monotonic()
        if jobs_mtime != self._jobs_mtime or now >= self._next_full_scan:
            self._jobs_mtime = jobs_mtime
            self._next_full_scan = now + self.settings.lease_seconds / 2
            entries = _entries(self.layout.jobs)
            self._remove_stale_staging(entries)
            candidates = [e.name for e in entries if not e.name.startswith(".")]
        else:
            candidates = sorted(self._foreign_active)
        foreign: set[str] = set()
        for job_id in candidates:
            if job_id in self.running or job_id in self.waiting:
                continue
            try:
                if self._recover_job(job_id, beats):
                    foreign.add(job_id)
            except Exception:  # one bad job folder must not stop the pass
                self.log.exception("job_recovery_failed", job_id=printable_name(job_id))
        self._foreign_active = foreign

    def _recover_job(self, job_id: str, beats: dict[str, Any]) -> bool:
        """Look at one job folder; True if it is another live worker's active job."""
        try:
            info = os.lstat(self.layout.job_dir(job_id))
        except FileNotFoundError:
            self.final_jobs.pop(job_id, None)
            return False
        remembered = self.final_jobs.get(job_id)
        if remembered is not None and remembered[2] == (info.st_ino, info.st_ctime_ns):
            return False  # final, and still the same folder (not deleted and reused)
        self.final_jobs.pop(job_id, None)
        if not stat.S_ISDIR(info.st_mode) or not is_valid_job_id(job_id):
            return False  # not a job folder (a client's link or file): never followed
        try:
            status = read_status(self.layout, job_id)
        except (ValueError, OSError) as exc:
            return self._recover_unreadable(job_id, beats, str(exc))
        if status is None:
            return False
        if status.is_final:
            self._remember_final(status)
            return False
        owner = owner_of(self.layout, job_id)
        if owner is None or self._alive(owner, beats):
            return True
        if take_ownership(self.layout, job_id, owner, self.me.id):
            self._adopt(job_id, status, previous_owner=owner)
        return False

    def _recover_unreadable(self, job_id: str, beats: dict[str, Any], problem: str) -> bool:
        """A status that is not valid (edited, truncated, a FIFO): while its owner lives it
        may be mid-write by a newer daemon; once the owner is dead, fail the job with the
        reason instead of leaving it stuck. Outputs it may list are left alone."""
        owner = owner_of(self.layout, job_id)
        if owner is None or self._alive(owner, beats):
            return owner is not None
        if not take_ownership(self.layout, job_id, owner, self.me.id):
            return False
        now = utcnow()
        status = transition(
            new_status(
                job_id,
                State.QUEUED,
                now=now,
                submitted_at=now,
                worker=self.me.ref(),
                max_attempts=1,
            ),
            State.FAILED,
            now=now,
            reason="status_unreadable",
            worker=self.me.ref(),
            error=ErrorInfo(
                code=ErrorCode.INTERNAL,
                message=f"status file unreadable after worker {owner} stopped: {problem}"[:2000],
            ),
        )
        status_file = self.layout.status_file(job_id)
        with contextlib.suppress(FileNotFoundError):
            status_file.rename(temp_name_for(status_file))  # a directory cannot be replaced
        write_status(self.layout, status)
        self._remember_final(status)
        self.log.warning("job_status_unreadable", job_id=job_id, previous_owner=owner)
        return False

    def _remove_stale_staging(self, entries: list[os.DirEntry[str]]) -> None:
        """Staging folders (claim step 2) of daemons that died before step 3, judged by
        the file server's clock."""
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):
                age = self._server_now - entry.stat(follow_symlinks=False).st_mtime
                if age > self.settings.lease_seconds:
                    remove_tree(Path(entry.path), self.layout.trash)

    def _recover_claims(self, beats: dict[str, Any]) -> None:
        try:
            names = os.listdir(self.layout.claims)
        except FileNotFoundError:
            return
        for gone in set(self._claim_failures) - set(names):
            del self._claim_failures[gone]
        for name in names:
            try:
                self._recover_claim(name, beats)
            except Exception as exc:  # one bad claim must not stop the pass
                failures = self._claim_failures.get(name, 0) + 1
                self._claim_failures[name] = failures
                self.log.exception(
                    "claim_recovery_failed", claim=printable_name(name), failures=failures
                )
                if failures >= CLAIM_ATTEMPTS:
                    self._quarantine(
                        self.layout.claims / name, f"claim cannot be established: {exc}"
                    )

    def _recover_claim(self, name: str, beats: dict[str, Any]) -> None:
        parts = name.split(".")
        if name.startswith("."):
            return  # a writer's temporary name
        if (
            len(parts) != 3
            or parts[2] != "json"
            or not is_valid_job_id(parts[0])
            or not WORKER_ID_PATTERN.fullmatch(parts[1])
        ):
            self._quarantine(self.layout.claims / name, "not a claim file name")
            return
        job_id, owner = parts[0], parts[1]
        # Our own claim files are finished within one loop turn; one still here means
        # establishing it failed (disk full, say): try again.
        if owner != self.me.id and self._alive(owner, beats):
            return
        mine = self.layout.claim_file(job_id, self.me.id)
        try:
            if owner != self.me.id:
                (self.layout.claims / name).rename(mine)
        except FileNotFoundError:
            return
        job_dir = self.layout.job_dir(job_id)
        if (
            is_real_dir(job_dir)
            and not lexists(self.layout.job_file(job_id))
            and owner_of(self.layout, job_id) == owner
        ):
            take_ownership(self.layout, job_id, owner, self.me.id)
        self.log.info("claim_recovered", job_id=job_id, previous_owner=owner)
        self._establish_claimed(
            job_id, mine, ns_to_datetime(os.lstat(mine).st_ctime_ns), start=True, slot_free=False
        )

    def _quarantine(self, path: Path, reason: str) -> None:
        """Move an entry the daemon cannot act on to rejected/ with the reason beside it."""
        with contextlib.suppress(FileNotFoundError):
            target = move_aside(self.layout, path, ErrorCode.INTERNAL, reason[:2000], utcnow())
            self.log.warning(
                "entry_quarantined", name=printable_name(path.name), to=target.name, reason=reason
            )
        self._claim_failures.pop(path.name, None)

    def _adopt(self, job_id: str, status: JobStatus, previous_owner: str) -> None:
        published = _finish_publishing(self.layout.job_dir(job_id), status)
        remove_temp_files(self.layout.job_dir(job_id))
        now = utcnow()
        try:
            raw = read_untrusted(
                self.layout.job_file(job_id), self.settings.limits.max_job_file_bytes
            )
            spec, kind = parse_job(raw)
        except (JobError, OSError, UnsafeFile, FileTooLarge) as exc:
            message = exc.message if isinstance(exc, JobError) else str(exc)
            status = transition(
                status,
                State.FAILED,
                now=now,
                reason="unreadable_on_recovery",
                error=ErrorInfo(code=ErrorCode.INTERNAL, message=message),
            )
            write_status(self.layout, status)
            self._remember_final(status)
            return
        worker = self.me.ref()
        if status.state is State.RUNNING and published:
            # It died after its last publish: the work is done, do not run it again.
            status = transition(
                status,
                State.SUCCEEDED,
                now=now,
                reason="finished_by_recovery",
                worker=worker,
                pending_publish=None,
            )
        elif status.state is State.RUNNING:
            for output in status.outputs:  # a partial set: the rerun publishes them all
                (self.layout.job_dir(job_id) / output.path).unlink(missing_ok=True)
            lost = ErrorInfo(
                code=ErrorCode.WORKER_LOST,
                retryable=True,
                message=f"worker {previous_owner} stopped while running the job",
            )
            if status.attempt < status.max_attempts:
                status = transition(
                    status,
                    State.QUEUED,
                    now=now,
                    reason="worker_lost",
                    attempt=status.attempt + 1,
                    worker=worker,
                    error=lost,
                    progress=0.0,
                    eta_seconds=None,
                    outputs=[],
                    pending_publish=None,
                )
            else:
                lost = lost.model_copy(update={"retryable": False})
                status = transition(
                    status, State.FAILED, now=now, reason="worker_lost", worker=worker, error=lost
                )
        else:
            status = transition(status, State.QUEUED, now=now, reason="taken_over", worker=worker)
        write_status(self.layout, status)
        self.log.info(
            "job_recovered",
            job_id=job_id,
            previous_owner=previous_owner,
            state=status.state.value,
            attempt=status.attempt,
        )
        if status.is_final:
            self._remember_final(status)
        else:
            handle = JobHandle(job_id, spec, kind, status, deadline=0.0)
            # retryAt may come from another host's clock: never wait past one full backoff.
            handle.not_before = min(
                _monotonic_due(status.retry_at),
                time.monotonic() + self.settings.retry.backoff_max_seconds,
            )
            self.waiting[job_id] = handle

    # -- retention -------------------------------------------------------------------------------
    def _retention(self) -> None:
        """Delete finished jobs past their state's retention; active jobs never."""
        now = utcnow()
        for job_id, (state, finished_at, _inode) in list(self.final_jobs.items()):
            if not is_expired(state, finished_at, now, self.settings.retention):
                continue
            # Confirm on disk: the id may have been deleted and reused since we cached it.
            current = self._status_or_none(job_id)
            if current is None:
                self.final_jobs.pop(job_id, None)
            elif is_expired(current.state, current.finished_at, now, self.settings.retention):
                self._delete_job(job_id)
        days = self.settings.retention.rejected_days
        if days > 0:
            # The error file is written at move time (the moved file keeps its own mtime),
            # and ages by the file server's clock.
            cutoff = self._server_now - days * 86400
            for entry in _entries(self.layout.rejected):
                if not entry.name.endswith(".error.json"):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        moved = self.layout.rejected / entry.name.removesuffix(".error.json")
                        if moved.is_dir() and not moved.is_symlink():
                            remove_tree(moved, self.layout.trash)
                        else:
                            moved.unlink(missing_ok=True)
                        Path(entry.path).unlink()
        # Leftovers of removals interrupted by a crash.
        for entry in _entries(self.layout.trash):
            shutil.rmtree(entry.path, ignore_errors=True)


def _finish_publishing(job_dir: Path, status: JobStatus) -> bool:
    """Roll a journalled publish forward; True if every planned output is now in place."""
    pending = status.pending_publish
    # Names in a status are plain names (the model refuses others): nothing here can reach
    # outside the job folder, and the temporary one must be ours.
    if (
        pending is not None
        and pending.temp.startswith(TEMP_PREFIX)
        and _is_regular(job_dir / pending.temp)
    ):
        (job_dir / pending.temp).replace(job_dir / pending.path)
        fd = open_log_for_append(job_dir / "job.log")
        with os.fdopen(fd, "a", encoding="utf-8") as log:
            log.write(f"# published {pending.path} (rename finished by recovery)\n")
    listed = {output.path: output for output in status.outputs}
    if not status.planned_outputs or set(status.planned_outputs) - set(listed):
        return False
    return all(
        _is_regular(job_dir / name, size=listed[name].size_bytes) for name in status.planned_outputs
    )


def _is_regular(path: Path, *, size: int | None = None) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and (size is None or info.st_size == size)


def _monotonic_due(retry_at: datetime | None) -> float:
    """The monotonic time matching a wall-clock retryAt (what is left of it, from now)."""
    if retry_at is None:
        return 0.0
    return time.monotonic() + max(0.0, (retry_at - utcnow()).total_seconds())


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []
