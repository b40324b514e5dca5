"""Recovery: take over what dead workers left in the spool (claims half-established, jobs
queued or running), and quarantine what cannot be taken over.

What a found status becomes is decided by the pure `spooler.takeover.take_over`; this
module finds the candidates, takes the owner token over (an atomic rename: exactly one
contender wins), rolls an interrupted publish forward through the storage seam, and writes
the result through the report seam. One bad item never stops the pass.

A roll forward that talks to remote storage (an S3 upload to finish: a 1 GB output takes
a while) runs in a thread of its own, never in the loop's pass: heartbeats, cancels and
claims go on meanwhile, and our fresh heartbeat keeps the lease on the job. The status is
not touched until it ends, so its journal still names the upload: kill -9 during it is
recovered like any other crash (the upload finished or aborted again, never orphaned).
The loop collects the result on a later pass and concludes the takeover there.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.fsutil import (
    TEMP_PREFIX,
    is_real_dir,
    lexists,
    remove_temp_files,
    remove_tree,
)
from spooler.jobtable import JobTable, folder_identity
from spooler.layout import is_valid_job_id
from spooler.loader import LoadedJob, read_job
from spooler.policy import PASS_BUDGET, compute_backoff
from spooler.report import Reporter
from spooler.runner import JobHandle, error_info
from spooler.spool import (
    RELEASED,
    move_aside,
    ns_to_datetime,
    owner_of,
    printable_name,
    read_status,
    take_ownership,
)
from spooler.status import ErrorInfo, JobStatus, State, new_status, transition
from spooler.storage import OutputStore, RolledForward
from spooler.takeover import take_over
from spooler.worker import WORKER_ID_PATTERN, WorkerIdentity, is_worker_alive, read_heartbeats


class Establish(Protocol):
    def __call__(
        self, job_id: str, claim_file: Path, submitted: datetime, now: datetime, *, start: bool
    ) -> JobHandle | None: ...


# Tries to establish a claim before it is moved aside to rejected/.
CLAIM_ATTEMPTS = 3
# Remote roll forwards (uploads to finish) running at once; more wait for a later pass.
REMOTE_WORKERS = 2
# Tries of a remote roll forward that fails for another reason than the storage's passing
# trouble (transient errors are tried again as long as it takes).
REMOTE_ATTEMPTS = 3


@dataclass
class RemoteRollForward:
    """A roll forward running off the loop thread, and what it came to."""

    status: JobStatus  # as found, still on disk while this runs
    previous_owner: str
    failures: int = 0
    not_before: float = 0.0  # monotonic: when a failed one is tried again
    done: threading.Event = field(default_factory=threading.Event)
    result: RolledForward | None = None
    error: Exception | None = None
    thread: threading.Thread | None = None


class Recovery:
    def __init__(
        self,
        settings: Settings,
        table: JobTable,
        reporter: Reporter,
        outputs: OutputStore,
        establish: Establish,
        me: WorkerIdentity,
    ) -> None:
        self.settings = settings
        self.table = table
        self.layout = table.layout
        self.reporter = reporter
        self.outputs = outputs
        self.establish = establish  # claim steps 2-4 (the inbox intake's)
        self.me = me
        self.log = structlog.get_logger().bind(worker=me.id)
        self._claim_failures: dict[str, int] = {}
        self._jobs_mtime = 0
        self._next_full_scan = 0.0
        self._foreign_active: set[str] = set()  # other workers' active jobs, last seen
        # No other live worker on the spool, by the last pass's heartbeats (False until the
        # first pass): only then does the inbox claim a job ahead of a free slot.
        self.alone = False
        self._backlog: list[str] = []  # job folders a pass ran out of time for
        self._remote: dict[str, RemoteRollForward] = {}  # by job id; touched by the loop only

    def _alive(self, worker_id: str, beats: dict[str, Any], server_now: float) -> bool:
        if worker_id == RELEASED:
            return False
        return is_worker_alive(
            worker_id,
            beats,
            me=self.me,
            server_now=server_now,
            lease_seconds=self.settings.lease_seconds,
            max_lease_seconds=self.settings.max_lease_seconds,
        )

    def run(self, clocks: Clocks) -> list[JobHandle]:
        """Take over claims and jobs whose worker is dead (or released them); returns the
        jobs taken over that are to run again.

        Listing jobs/ costs ~2 ms per 1,000 jobs, so it happens only when the folder
        changed (its mtime) and every lease_seconds / 2 as a safety net; in between, only
        the other workers' active jobs seen last time are looked at again.
        """
        beats = read_heartbeats(self.layout)
        self.alone = not any(
            self._alive(worker, beats, clocks.server) for worker in beats if worker != self.me.id
        )
        adopted = self._collect_remote(clocks)
        adopted += self._recover_claims(beats, clocks)
        try:
            jobs_mtime = os.stat(self.layout.jobs).st_mtime_ns
        except FileNotFoundError:
            return adopted
        budget_ends = time.monotonic() + PASS_BUDGET * self.settings.heartbeat_seconds
        if self._backlog:
            candidates, foreign = self._backlog, set(self._foreign_active)
        elif jobs_mtime != self._jobs_mtime or clocks.monotonic >= self._next_full_scan:
            self._jobs_mtime = jobs_mtime
            self._next_full_scan = clocks.monotonic + self.settings.lease_seconds / 2
            entries = _entries(self.layout.jobs)
            self._remove_stale_staging(entries, clocks.server)
            candidates = [e.name for e in entries if not e.name.startswith(".")]
            foreign = set()
        else:
            candidates, foreign = sorted(self._foreign_active), set()
        self._backlog = []
        for index, job_id in enumerate(candidates):
            if time.monotonic() >= budget_ends:
                # The first pass over 10,000 finished jobs reads every status once: spread
                # over passes, so heartbeats and cancels never wait behind it.
                self._backlog = candidates[index:]
                break
            if self.table.is_active(job_id) or job_id in self._remote:
                continue
            try:
                found = self._recover_job(job_id, beats, clocks)
            except Exception:  # one bad job folder must not stop the pass
                self.log.exception("job_recovery_failed", job_id=printable_name(job_id))
                continue
            if found is True:
                foreign.add(job_id)
            elif isinstance(found, JobHandle):
                adopted.append(found)
        self._foreign_active = foreign
        return adopted

    def _recover_job(self, job_id: str, beats: dict[str, Any], clocks: Clocks) -> JobHandle | bool:
        """Look at one job folder: True if it is another live worker's active job, a handle
        if we took it over to run again, else False."""
        folder = folder_identity(self.layout, job_id)
        if folder is None or self.table.known_final(job_id, folder):
            return False  # gone, or final and still the same folder (not deleted and reused)
        if not is_real_dir(self.layout.job_dir(job_id)) or not is_valid_job_id(job_id):
            return False  # not a job folder (a client's link or file): never followed
        try:
            status = read_status(self.layout, job_id)
        except (ValueError, OSError) as exc:
            return self._recover_unreadable(job_id, beats, clocks, str(exc))
        if status is None:  # a kill -9 amid _recover_unreadable below: finish its work
            return self._recover_unreadable(job_id, beats, clocks, "status.json is missing")
        if status.is_final:
            self.table.remember_final(status)
            return False
        owner = owner_of(self.layout, job_id)
        if owner is None or self._alive(owner, beats, clocks.server):
            return True
        if not lexists(self.layout.job_file(job_id)) and self._claimed(job_id):
            # Half established (claim step 4 done, not 5): the claim's recovery finishes
            # it with the job file; adopting the folder now would fail a valid job.
            return True
        remote = self.outputs.remote_roll_forward(status)
        if remote and self._remote_running() >= REMOTE_WORKERS:
            return True  # looked at again next pass (or taken by another daemon)
        if not take_ownership(self.layout, job_id, owner, self.me.id):
            return False
        if remote:
            self._start_remote(job_id, RemoteRollForward(status, owner))
            return False
        return self._adopt(job_id, status, owner, clocks) or False

    def _claimed(self, job_id: str) -> bool:
        """Is a claim file of this job in claims/ (any worker's)?"""
        prefix = f"{job_id}."
        try:
            return any(name.startswith(prefix) for name in os.listdir(self.layout.claims))
        except FileNotFoundError:
            return False

    def _recover_unreadable(
        self, job_id: str, beats: dict[str, Any], clocks: Clocks, problem: str
    ) -> bool:
        """A status that is not valid (edited, truncated, a FIFO): while its owner lives it
        may be mid-write by a newer daemon; once the owner is dead, fail the job with the
        reason instead of leaving it stuck. Outputs it may list are left alone."""
        owner = owner_of(self.layout, job_id)
        if owner is None or self._alive(owner, beats, clocks.server):
            return owner is not None
        if not take_ownership(self.layout, job_id, owner, self.me.id):
            return False
        now = clocks.wall
        fresh = new_status(
            job_id, State.QUEUED, now=now, submitted_at=now, worker=None, max_attempts=1
        )
        status = transition(
            fresh,
            State.FAILED,
            now=now,
            reason="status_unreadable",
            worker=self.me.ref(),
            error=ErrorInfo(
                code=ErrorCode.INTERNAL,
                message=f"status file unreadable after worker {owner} stopped: {problem}"[:2000],
            ),
        )
        self.reporter.write(None, status)  # over whatever is there (spool.write_status)
        self.table.remember_final(status)
        self.log.warning("job_status_unreadable", job_id=job_id, previous_owner=owner)
        return False

    def _remove_stale_staging(self, entries: list[os.DirEntry[str]], server_now: float) -> None:
        """Staging folders (claim step 2) of daemons that died before step 3, judged by
        the file server's clock."""
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):
                age = server_now - entry.stat(follow_symlinks=False).st_mtime
                if age > self.settings.lease_seconds:
                    deadline = time.monotonic() + PASS_BUDGET * self.settings.heartbeat_seconds
                    remove_tree(Path(entry.path), self.layout.trash, deadline=deadline)

    # -- claims -------------------------------------------------------------------------------
    def _recover_claims(self, beats: dict[str, Any], clocks: Clocks) -> list[JobHandle]:
        try:
            names = os.listdir(self.layout.claims)
        except FileNotFoundError:
            return []
        for gone in set(self._claim_failures) - set(names):
            del self._claim_failures[gone]
        adopted: list[JobHandle] = []
        budget_ends = time.monotonic() + PASS_BUDGET * self.settings.heartbeat_seconds
        for name in names:
            if time.monotonic() >= budget_ends:
                break  # the rest on the next pass: heartbeats never wait behind a full folder
            try:
                handle = self._recover_claim(name, beats, clocks)
            except Exception as exc:  # one bad claim must not stop the pass
                failures = self._claim_failures.get(name, 0) + 1
                self._claim_failures[name] = failures
                self.log.exception(
                    "claim_recovery_failed", claim=printable_name(name), failures=failures
                )
                if failures >= CLAIM_ATTEMPTS:
                    reason = f"claim cannot be established: {exc}"
                    self._quarantine(self.layout.claims / name, reason, clocks.wall)
                continue
            if handle is not None:
                adopted.append(handle)
        return adopted

    def _recover_claim(self, name: str, beats: dict[str, Any], clocks: Clocks) -> JobHandle | None:
        if name.startswith("."):
            return None  # a writer's temporary name
        parts = name.split(".")
        if (
            len(parts) != 3
            or parts[2] != "json"
            or not is_valid_job_id(parts[0])
            or not WORKER_ID_PATTERN.fullmatch(parts[1])
        ):
            self._quarantine(self.layout.claims / name, "not a claim file name", clocks.wall)
            return None
        job_id, owner = parts[0], parts[1]
        # Our own claim files are finished within one loop turn; one still here means
        # establishing it failed (disk full, say): try again.
        if owner != self.me.id and self._alive(owner, beats, clocks.server):
            return None
        mine = self.layout.claim_file(job_id, self.me.id)
        try:
            if owner != self.me.id:
                (self.layout.claims / name).rename(mine)
        except FileNotFoundError:
            return None
        if is_real_dir(self.layout.job_dir(job_id)) and not lexists(self.layout.job_file(job_id)):
            # Half established (claim step 4 done, not 5) by the claim's owner, or by one
            # who recovered it and died in turn: the folder becomes ours, or is left to
            # whoever took it first.
            holder = owner_of(self.layout, job_id)
            if holder is not None and holder != self.me.id:
                dead = holder == owner or not self._alive(holder, beats, clocks.server)
                if not dead or not take_ownership(self.layout, job_id, holder, self.me.id):
                    return None
        self.log.info("claim_recovered", job_id=job_id, previous_owner=owner)
        submitted = ns_to_datetime(os.lstat(mine).st_ctime_ns)
        return self.establish(job_id, mine, submitted, clocks.wall, start=True)

    def _quarantine(self, path: Path, reason: str, now: datetime) -> None:
        """Move an entry the daemon cannot act on to rejected/ with the reason beside it."""
        with contextlib.suppress(FileNotFoundError):
            target = move_aside(self.layout, path, ErrorCode.INTERNAL, reason[:2000], now)
            self.log.warning(
                "entry_quarantined", name=printable_name(path.name), to=target.name, reason=reason
            )
        self._claim_failures.pop(path.name, None)

    # -- remote roll forwards, off the loop -------------------------------------------------
    def _start_remote(self, job_id: str, work: RemoteRollForward) -> None:
        def body() -> None:
            try:
                work.result = self.outputs.roll_forward(job_id, work.status)
            except Exception as exc:  # handed to the loop, which decides
                work.error = exc
            finally:
                work.done.set()

        work.done.clear()
        work.result = work.error = None
        # A daemon thread: at exit it dies with the process, like kill -9, and the journal
        # on disk has the next daemon finish the upload (never two of us at once after our
        # heartbeat is gone).
        work.thread = threading.Thread(target=body, name=f"roll-forward-{job_id}", daemon=True)
        self._remote[job_id] = work
        self.log.info("remote_roll_forward_started", job_id=job_id, attempt=work.failures + 1)
        work.thread.start()

    def _remote_running(self) -> int:
        """Roll forwards running now (one waiting for its retry holds no worker)."""
        return sum(1 for work in self._remote.values() if not work.done.is_set())

    def _collect_remote(self, clocks: Clocks) -> list[JobHandle]:
        """Conclude the takeovers whose remote roll forward ended; try failed ones again
        with backoff (a transient storage failure: the journal is still on disk)."""
        adopted: list[JobHandle] = []
        for job_id, work in list(self._remote.items()):
            if not work.done.is_set():
                continue
            if work.error is None and work.result is not None:
                del self._remote[job_id]
                if owner_of(self.layout, job_id) != self.me.id:
                    continue  # fenced: another worker took it over while we were presumed dead
                handle = self._guarded_conclude(job_id, work, work.result, clocks)
                adopted += [handle] if handle is not None else []
                continue
            error = work.error
            if work.thread is not None:  # it just failed
                work.failures += 1
                work.thread = None
                transient = isinstance(error, JobError) and error.transient
                if not transient and work.failures >= REMOTE_ATTEMPTS:
                    # Not the storage's passing trouble (a destination no longer allowed,
                    # an edited status), again and again: taken over as not published.
                    failure = f"{type(error).__name__}: {error}"
                    self.log.error("remote_roll_forward_failed", job_id=job_id, error=failure)
                    del self._remote[job_id]
                    if owner_of(self.layout, job_id) == self.me.id:
                        handle = self._guarded_conclude(job_id, work, RolledForward(False), clocks)
                        adopted += [handle] if handle is not None else []
                    continue
                # A storage that does not answer is waited for as long as it takes: the
                # journal (and so the open upload) is kept until it is finished or aborted.
                delay = compute_backoff(work.failures, self.settings.retry)
                work.not_before = clocks.monotonic + delay
                self.log.warning(
                    "remote_roll_forward_retry",
                    job_id=job_id,
                    code=error.code.value if isinstance(error, JobError) else None,
                    error=f"{type(error).__name__}: {error}",
                    in_seconds=round(delay, 2),
                )
                continue
            if clocks.monotonic < work.not_before or self._remote_running() >= REMOTE_WORKERS:
                continue
            try:
                status = read_status(self.layout, job_id)
            except (ValueError, OSError):
                status = None
            if status is None or status.is_final or owner_of(self.layout, job_id) != self.me.id:
                del self._remote[job_id]  # deleted, or no longer ours: nothing to conclude
                continue
            work.status = status
            self._start_remote(job_id, work)
        return adopted

    def _guarded_conclude(
        self, job_id: str, work: RemoteRollForward, rolled: RolledForward, clocks: Clocks
    ) -> JobHandle | None:
        try:
            return self._conclude(job_id, work.status, work.previous_owner, rolled, clocks)
        except Exception:  # one bad job folder must not stop the pass
            self.log.exception("job_recovery_failed", job_id=printable_name(job_id))
            return None

    # -- adoption -------------------------------------------------------------------------------
    def _adopt(
        self, job_id: str, status: JobStatus, previous_owner: str, clocks: Clocks
    ) -> JobHandle | None:
        rolled = self.outputs.roll_forward(job_id, status)
        return self._conclude(job_id, status, previous_owner, rolled, clocks)

    def _conclude(
        self,
        job_id: str,
        status: JobStatus,
        previous_owner: str,
        rolled: RolledForward,
        clocks: Clocks,
    ) -> JobHandle | None:
        """What the status becomes once its publish was rolled forward (take_over)."""
        found = status
        if rolled.outputs is not None and status.state is State.RUNNING:
            # The output entries with what the storage reported (an upload's etag, checksum).
            status = status.model_copy(update={"outputs": rolled.outputs})
        published = rolled.published
        remove_temp_files(self.layout.job_dir(job_id))
        loaded: LoadedJob | None = None
        load_error: ErrorInfo | None = None
        try:
            loaded = read_job(self.layout.job_file(job_id), self.settings)
        except JobError as exc:
            load_error = error_info(exc)
        result = take_over(
            status,
            published=published,
            load_error=load_error,
            me=self.me.ref(),
            previous_owner=previous_owner,
            now=clocks.wall,
        )
        self.outputs.remove(job_id, result.withdraw)
        self.reporter.write(found, result.status)
        self.log.info(
            "job_recovered",
            job_id=job_id,
            previous_owner=previous_owner,
            state=result.status.state.value,
            attempt=result.status.attempt,
        )
        if result.status.is_final or loaded is None:
            self.table.remember_final(result.status)
            return None
        handle = JobHandle(job_id, loaded.spec, loaded.kind, result.status, deadline=0.0)
        # retryAt may come from another host's clock: never wait past one full backoff.
        handle.not_before = min(
            monotonic_due(result.status.retry_at, clocks),
            clocks.monotonic + self.settings.retry.backoff_max_seconds,
        )
        return handle


def monotonic_due(retry_at: datetime | None, clocks: Clocks) -> float:
    """The monotonic time matching a wall-clock retryAt (what is left of it, from now)."""
    if retry_at is None:
        return 0.0
    return clocks.monotonic + max(0.0, (retry_at - clocks.wall).total_seconds())


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []
