"""The spool's inbox as an intake: scan, readiness, queue order, the claim, markers.

Claim protocol (docs/protocol.md, "Claim"; the steps are in spooler/spool.py):
rename inbox/<id>.json into claims/, stage jobs/.tmp-<id>.*/ with our owner token and the
first status, rename it to jobs/<id>, move the claim file in as job.json. Exactly one daemon
wins the first rename; a crash between steps is finished by recovery.

Every entry is untrusted input: one that cannot be handled is logged and the pass goes on;
work per pass is bounded in time so heartbeats and cancels never wait behind a long inbox.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.fsutil import (
    FileTooLarge,
    UnsafeFile,
    create_marker,
    is_real_dir,
    leases_work,
    lexists,
    open_for_writing_elsewhere,
    read_untrusted,
)
from spooler.jobtable import JobTable
from spooler.kinds import decode_job_json
from spooler.layout import EntryKind, SpoolLayout
from spooler.loader import LoadedJob, read_job
from spooler.policy import (
    PASS_BUDGET,
    Candidate,
    clamp_priority,
    effective_max_attempts,
    inbox_file_ready,
    order_candidates,
)
from spooler.recovery import Recovery
from spooler.report import Reporter
from spooler.retention import Retention
from spooler.runner import JobHandle, error_info
from spooler.spool import (
    RELEASED,
    DuplicateJob,
    InboxFile,
    claim,
    establish,
    move_aside,
    ns_to_datetime,
    printable_name,
    read_job_bytes_for_priority,
    read_status,
    restore_layout,
    scan_inbox,
    take_ownership,
)
from spooler.status import ErrorInfo, State, new_status
from spooler.storage import OutputStore
from spooler.watcher import InboxWatcher
from spooler.worker import WorkerIdentity

# Strays moved aside per pass at most (each is a rename and an fsynced error file).
STRAYS_PER_PASS = 100


@dataclass
class _Seen:
    signature: tuple[int, int, int]
    since: float  # monotonic time the signature was first seen
    # Found complete with this signature: not probed again on every pass (a burst of
    # files settling was probed, lease and parse, on each until its settle time); only the
    # lease is asked again right before the claim (_still_closed).
    ready: bool = False
    ready_at: float = 0.0  # the pass (its monotonic time) that found it ready


class InboxIntake:
    name = "inbox"

    def __init__(
        self,
        settings: Settings,
        table: JobTable,
        reporter: Reporter,
        retention: Retention,
        outputs: OutputStore,
        me: WorkerIdentity,
        wake: threading.Event,
    ) -> None:
        self.layout: SpoolLayout = table.layout
        self.table = table
        self.reporter = reporter
        self.retention = retention
        self.me = me
        self.wake = wake
        self.use_leases = False  # probed at start: does this file system grant read leases?
        self.watcher = InboxWatcher(
            self.layout.inbox,
            settings.watch_mode,
            wake,
            poll_seconds=min(1.0, settings.rescan_seconds),
        )
        self.log = structlog.get_logger().bind(worker=me.id)
        self.claimed_count = 0
        self._seen: dict[str, _Seen] = {}
        # The last pass left a job file in the inbox (not yet complete, or more jobs than
        # it could claim): a pass is worth it whenever a slot can take one.
        self._unclaimed = True
        self._priorities: dict[str, tuple[tuple[int, int, int], int]] = {}
        self._orphan_markers: dict[str, float] = {}
        self.recovery = Recovery(settings, table, reporter, outputs, self.establish, me)
        self.settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """A reload (SIGHUP) reaches recovery too."""
        self._settings = settings
        self.recovery.settings = settings

    # -- the seam ---------------------------------------------------------------------------
    def start(self) -> None:
        auto = self.settings.inbox_check == "auto"
        self.use_leases = auto and leases_work(self.layout.inbox)
        self.watcher.start()

    def close(self) -> None:
        self.watcher.stop()

    def check(self, clocks: Clocks) -> bool:
        """Watchdog events are hints, but a dead observer thread is restarted."""
        if self.watcher.healthy():
            return False
        self.log.warning("watcher_dead_restarting", restarts=self.watcher.restarts + 1)
        self._restore_layout()  # a watched folder that was removed ends its watch
        self.watcher.restart()
        self.watcher.changed.set()  # events were missed meanwhile: a full pass now
        return True

    def _restore_layout(self) -> None:
        """Spool folders removed by hand are made again: without claims/ every claim
        would look lost to a peer, without jobs/ none could be established."""
        for folder in restore_layout(self.layout):
            self.log.warning("spool_folder_recreated", folder=str(folder))

    def describe(self) -> dict[str, str]:
        return {
            "inbox": str(self.layout.inbox),
            "watcher": self.watcher.kind,
            "writer_check": "lease" if self.use_leases else "settle",
        }

    def cancel_requested(self, job_id: str) -> bool:
        return lexists(self.layout.job_cancel(job_id))

    def owns(self, job_id: str) -> bool:
        return lexists(self.layout.owner_file(job_id, self.me.id))

    def release(self, job_id: str) -> None:
        take_ownership(self.layout, job_id, self.me.id, RELEASED)

    def housekeeping(self, clocks: Clocks) -> list[JobHandle]:
        """Claims and jobs dead workers left (spooler.recovery), to queue again."""
        return self.recovery.run(clocks)

    def take(self, clocks: Clocks, *, rescan: bool = True) -> list[JobHandle]:
        """One pass over the inbox: as many jobs claimed as there are free slots, highest
        effective priority first; markers handled; then, with what is left of the pass's
        time budget, strays moved aside (a client dumping thousands of odd files slows
        only their own removal, never the claim).

        No pass, unless the rescan is due (`rescan`), after neither an inbox event nor a
        pass that left a job file behind while a slot (or a claim ahead) could take one: a
        pass reads every inbox entry, and the loop turns every 0.1 s while slots are full."""
        if not (
            rescan
            or self.watcher.changed.is_set()
            or (self._unclaimed and self._claimable(clocks) > 0)
        ):
            return []
        self.watcher.changed.clear()  # an event from now on calls for another pass
        if rescan:
            self._restore_layout()
        now = clocks.monotonic
        budget_ends = time.monotonic() + PASS_BUDGET * self.settings.heartbeat_seconds
        items = scan_inbox(self.layout)
        names = {i.entry.name for i in items}
        for memory in (self._seen, self._priorities, self._orphan_markers):
            for gone in set(memory) - names:
                del memory[gone]
        jobs = {i.entry.job_id: i for i in items if i.entry.kind is EntryKind.JOB}
        markers = [i for i in items if i.entry.kind in (EntryKind.CANCEL, EntryKind.DELETE)]
        strays = [i for i in items if i.entry.kind is EntryKind.STRAY]
        cancel_requested = {m.entry.job_id for m in markers}
        taken: list[JobHandle] = []
        candidates: list[Candidate] = []
        # Without a free slot, jobs stay in the inbox for another daemon: no need to look
        # at them (a long queue would otherwise be re-read on every event).
        look_at_jobs = self._claimable(clocks) > 0
        for item in jobs.values():
            if time.monotonic() >= budget_ends:
                self._come_back()  # come back at once for the rest
                break
            with self._isolated(item.entry.name):
                self._look_at(item, clocks, look_at_jobs, cancel_requested, candidates)
        for marker in markers:
            if marker.entry.job_id not in jobs:
                with self._isolated(marker.entry.name):
                    self._handle_marker(marker, now, clocks.wall)
        taken = self._claim_candidates(candidates, jobs, clocks, budget_ends)
        for moved, item in enumerate(strays):
            if moved >= STRAYS_PER_PASS or time.monotonic() >= budget_ends:
                self._come_back()
                break
            with self._isolated(item.entry.name):
                if self._ready(item, now):
                    self._move_stray(item, clocks.wall)
        self._unclaimed = len(taken) < len(jobs)
        return taken

    def _claim_candidates(
        self,
        candidates: list[Candidate],
        jobs: dict[str | None, InboxFile],
        clocks: Clocks,
        budget_ends: float,
    ) -> list[JobHandle]:
        taken: list[JobHandle] = []
        free = self._claimable(clocks)
        if free <= 0 or not candidates:
            return taken
        if len(candidates) > free:
            candidates = [
                Candidate(c.job_id, self._priority_of(jobs[c.job_id]), c.submitted)
                for c in candidates
            ]
            candidates = order_candidates(candidates, clocks.server, self.settings.limits)
        for candidate in candidates:
            if len(taken) >= free:
                break
            if time.monotonic() >= budget_ends:
                self._come_back()
                break
            with self._isolated(candidate.job_id):
                if not self._still_closed(jobs[candidate.job_id], clocks.monotonic):
                    continue
                ahead = self.table.free_slots() <= len(taken)  # no slot free for it yet
                handle = self._claim(jobs[candidate.job_id], clocks, start=True, ahead=ahead)
                if handle is not None:
                    taken.append(handle)
        return taken

    def _come_back(self) -> None:
        """The pass ran out of its time budget: another one at once for the rest."""
        self.watcher.changed.set()
        self.wake.set()

    def _claimable(self, clocks: Clocks) -> int:
        """Jobs to claim in this pass: one per free slot. With none free, one job ahead
        (it waits, claimed, and starts the moment a slot frees: no inbox pass, claim or
        load between one encode and the next) when all of these hold:
        - no other live worker shares the spool (an idle peer would run it at once);
        - nothing of ours waits already (a retry, or the job claimed ahead before);
        - the slots are full of encodes (not of jobs publishing: their end is unknown),
          each with its ffmpeg running and expected to end within `claim_ahead_seconds`
          (an estimate overrun by more than that counts as unknown).
        The job claimed ahead takes the next free slot: a higher-priority job arriving
        after it waits behind it, for that job's whole run (docs/protocol.md §3)."""
        free = self.table.free_slots()
        if free > 0:
            return free
        window = self.settings.claim_ahead_seconds
        if window <= 0 or not self.recovery.alone or self.table.waiting:
            return 0
        encoding = [h for h in self.table.running.values() if not h.encoded.is_set()]
        if not encoding or len(encoding) < self.table.max_jobs:
            return 0
        now = time.monotonic()  # the clock the job threads' estimates are on
        for handle in encoding:
            ends_by = handle.encode_ends_by
            if ends_by is None or abs(ends_by - now) > window:
                return 0
        return 1

    @contextlib.contextmanager
    def _isolated(self, name: str) -> Any:
        """One odd entry must never stop the pass: log it and go on."""
        try:
            yield
        except Exception:
            self.log.exception("inbox_entry_failed", name=printable_name(name))

    # -- readiness ------------------------------------------------------------------------
    def _look_at(
        self,
        item: InboxFile,
        clocks: Clocks,
        look_at_jobs: bool,
        cancel_requested: set[str | None],
        candidates: list[Candidate],
    ) -> None:
        assert item.entry.job_id is not None
        cancelled = item.entry.job_id in cancel_requested
        if not (look_at_jobs or cancelled):
            self._track(item, clocks.monotonic)  # keeps the settle clock running
            return
        if not self._ready(item, clocks.monotonic):
            return
        if cancelled:
            self._claim(item, clocks, start=False)
        else:
            candidates.append(Candidate(item.entry.job_id, 0, item.ctime_ns / 1e9))

    def _ready(self, item: InboxFile, now: float) -> bool:
        seen = self._track(item, now)
        if seen.ready:
            return True
        seen.ready = inbox_file_ready(
            regular=item.is_regular,
            unchanged_for=now - seen.since,
            settle_seconds=self.settings.settle_seconds,
            writer_closed=lambda: (
                self.use_leases and open_for_writing_elsewhere(item.path) is False
            ),
            parses=lambda: self._parses(item),
        )
        seen.ready_at = now
        return seen.ready

    def _still_closed(self, item: InboxFile, now: float) -> bool:
        """A file found ready on an earlier pass, about to be claimed: if that was before it
        settled, the lease must still say that no writer has it open."""
        seen = self._seen.get(item.entry.name)
        if seen is None or not seen.ready:
            return False
        if seen.ready_at == now or now - seen.since >= self.settings.settle_seconds:
            return True  # found ready in this very pass, or settled
        if not item.is_regular:
            return True
        if open_for_writing_elsewhere(item.path) is False:
            return True
        seen.ready = False
        return False

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

    def _priority_of(self, item: InboxFile) -> int:
        """The job file's priority within the configured limits (the raw one is cached:
        a reload may change the limits)."""
        cached = self._priorities.get(item.entry.name)
        if cached and cached[0] == item.signature:
            return clamp_priority(cached[1], self.settings.limits)
        try:
            raw = read_untrusted(item.path, self.settings.limits.max_job_file_bytes)
            priority = read_job_bytes_for_priority(raw)
        except (OSError, UnsafeFile, FileTooLarge):
            priority = 0
        self._priorities[item.entry.name] = (item.signature, priority)
        return clamp_priority(priority, self.settings.limits)

    def _move_stray(self, item: InboxFile, now: datetime) -> None:
        try:
            target = move_aside(
                self.layout,
                item.path,
                ErrorCode.INVALID_ID,
                f"{printable_name(item.entry.name)!r} is not <jobId>.json, <jobId>.cancel or "
                "<jobId>.delete with a valid job id",
                now,
            )
        except FileNotFoundError:
            return  # another daemon moved it first
        self.log.warning(
            "inbox_entry_moved_aside",
            name=printable_name(item.entry.name),
            to=target.name,
            code=ErrorCode.INVALID_ID.value,
        )

    # -- the claim ------------------------------------------------------------------------
    def _claim(
        self, item: InboxFile, clocks: Clocks, *, start: bool, ahead: bool = False
    ) -> JobHandle | None:
        job_id = item.entry.job_id
        assert job_id is not None
        claim_file = claim(self.layout, job_id, self.me.id)
        if claim_file is None:
            return None  # another daemon won the rename
        self.claimed_count += 1
        if ahead:
            self.log.info("job_claimed", job_id=job_id, ahead=True)
        else:
            self.log.info("job_claimed", job_id=job_id)
        self._seen.pop(item.entry.name, None)
        return self.establish(
            job_id, claim_file, ns_to_datetime(item.ctime_ns), clocks.wall, start=start
        )

    def establish(
        self,
        job_id: str,
        claim_file: Path,
        submitted: datetime,
        now: datetime,
        *,
        start: bool,
    ) -> JobHandle | None:
        """Claim steps 2-4 for a claim file we hold; the handle of a job to run, or None
        when it ended at once (rejected, cancelled, a duplicate id moved aside)."""
        loaded: LoadedJob | None = None
        error: ErrorInfo | None = None
        try:
            loaded = read_job(claim_file, self.settings)
        except JobError as exc:
            error = error_info(exc)
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
        spec = loaded.spec if loaded else None
        status = new_status(
            job_id,
            state,
            now=now,
            submitted_at=submitted,
            worker=self.me.ref(),
            max_attempts=effective_max_attempts(
                spec.max_attempts if spec else None, self.settings.retry
            ),
            kind=loaded.kind.name if loaded else None,
            priority=clamp_priority(spec.priority, self.settings.limits) if spec else 0,
            metadata=spec.metadata if spec else {},
            error=error,
        )
        try:
            try:
                establish(self.layout, job_id, claim_file, self.me.id, status)
            except (ValueError, TypeError, RecursionError) as exc:
                # The loader refuses what a status cannot carry; should anything still slip
                # through, the job is rejected with a status that holds none of its content.
                loaded, state = None, State.REJECTED
                error = ErrorInfo(code=ErrorCode.INVALID_JOB, message=f"cannot be recorded: {exc}")
                status = new_status(
                    job_id, state, now=now, submitted_at=submitted, worker=self.me.ref(),
                    max_attempts=1, error=error,
                )  # fmt: skip
                establish(self.layout, job_id, claim_file, self.me.id, status)
        except DuplicateJob:
            target = move_aside(
                self.layout,
                claim_file,
                ErrorCode.DUPLICATE_ID,
                f"a job with id {job_id!r} already exists",
                now,
                original_name=f"{job_id}.json",
            )
            self.log.warning(
                "job_rejected", job_id=job_id, code="duplicate_id", moved_to=target.name
            )
            return None
        self.reporter.announce(None, status)
        if error is not None and state is State.REJECTED:
            self.log.warning(
                "job_rejected", job_id=job_id, code=error.code.value, message=error.message
            )
        if status.is_final:
            self.table.remember_final(status)
            self._consume_markers(job_id)
            return None
        assert loaded is not None
        return JobHandle(job_id, loaded.spec, loaded.kind, status, deadline=0.0)

    # -- markers --------------------------------------------------------------------------
    def _consume_markers(self, job_id: str) -> None:
        """A cancel marker in the inbox moves into the job folder (where it stays as a record);
        a delete marker of a finished job removes the job."""
        self._move_cancel_marker(self.layout.inbox_cancel(job_id), job_id)
        if lexists(self.layout.inbox_delete(job_id)) and job_id in self.table.final:
            self.retention.delete_job(job_id)
            self._drop_marker(self.layout.inbox_delete(job_id))

    def _handle_marker(self, marker: InboxFile, now: float, wall: datetime) -> None:
        job_id = marker.entry.job_id
        assert job_id is not None
        if not is_real_dir(self.layout.job_dir(job_id)):
            # Unknown job: maybe still being established by another daemon. Give it a lease.
            first = self._orphan_markers.setdefault(marker.entry.name, now)
            if now - first >= self.settings.lease_seconds:
                self._orphan_markers.pop(marker.entry.name, None)
                with contextlib.suppress(FileNotFoundError):
                    if marker.entry.kind is EntryKind.DELETE:
                        self._drop_marker(marker.path)  # deleting what is not there is done
                    else:
                        move_aside(
                            self.layout,
                            marker.path,
                            ErrorCode.UNKNOWN_JOB,
                            f"no job {job_id!r} to cancel",
                            wall,
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
            self.retention.delete_job(job_id)
            self._drop_marker(marker.path)
        else:
            create_marker(self.layout.job_cancel(job_id))  # delete = cancel, then delete

    def _move_cancel_marker(self, marker: Path, job_id: str) -> None:
        """An inbox cancel marker moves into the job folder, where it stays as the record.
        Whatever already stands at jobs/<id>/cancel (a client's own marker, a directory, a
        link) already says "cancel": it is left alone and the inbox marker is dropped."""
        target = self.layout.job_cancel(job_id)
        if lexists(target):
            self._drop_marker(marker)
            return
        with contextlib.suppress(FileNotFoundError):
            marker.rename(target)

    def _drop_marker(self, marker: Path) -> None:
        """A marker that has done its work goes. One that is a folder (a client's, with
        whatever is in it) is moved to rejected/ with the reason, never emptied."""
        try:
            marker.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            with contextlib.suppress(FileNotFoundError):
                move_aside(
                    self.layout,
                    marker,
                    ErrorCode.NOT_A_FILE,
                    "a marker is an empty file; this folder was acted on and set aside",
                    datetime.now(UTC),
                )
