"""One attempt of one job, run in a worker thread: the JobContext a kind sees, and the
final bookkeeping (succeeded / failed / retry / cancelled / requeued on shutdown)."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import structlog

from spooler.config import Settings
from spooler.errors import DaemonStopping, ErrorCode, JobCancelled, JobError, OwnershipLost
from spooler.ffmpeg import FfmpegResult, Limits, run_ffmpeg
from spooler.fsutil import TEMP_PREFIX, open_log_for_append, remove_temp_files
from spooler.jobkind import JobKind, JobSpec, Step
from spooler.layout import SpoolLayout
from spooler.policy import compute_backoff
from spooler.progress import ProgressTracker
from spooler.report import Reporter
from spooler.s3.remotes import RemoteSources
from spooler.status import (
    ErrorInfo,
    JobStatus,
    OutputInfo,
    PendingPublish,
    State,
    Warning_,
    annotate,
    progress_update,
    transition,
    utcnow,
)
from spooler.storage import OutputStore
from spooler.worker import WorkerIdentity


@dataclass
class JobHandle:
    """Shared between the daemon loop and the job's thread."""

    job_id: str
    spec: JobSpec
    kind: JobKind
    status: JobStatus
    deadline: float  # time.monotonic()
    cancel: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    # Set when our owner token is gone: another worker took the job over.
    lost: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    # time.monotonic() before which a queued job must not start (retry backoff). Monotonic,
    # so a wall clock jumping back does not stall retries.
    not_before: float = 0.0
    # False while the last status could not be written (full or read-only disk): the
    # daemon retries the write so a finished job never stays "running" on disk.
    saved: bool = True
    # Held while `status` changes and is written: the job's thread and the loop both write.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set by the job's thread once its last ffmpeg has ended (JobContext.encoded): checking
    # and publishing the outputs do not hold a slot.
    encoded: threading.Event = field(default_factory=threading.Event)
    # time.monotonic() by which the running encode is expected to end (its ETA once progress
    # is known, else its ffmpeg's media seconds at 1x), None while no ffmpeg of the job
    # runs: the inbox claims one job ahead when every slot's encode is about to end.
    # Written by the job's thread(s) (single assignments), read by the loop.
    encode_ends_by: float | None = None


class SlotSignals:
    """What a job's thread tells the loop about slots, waking it each time: an ffmpeg has
    started (the inbox may claim the next job ahead), the job has encoded (its slot is free).

    And one courtesy a job that has encoded pays the next: when a job waits for a slot, its
    own checks and publish wait until the next ffmpeg has started (at most YIELD_SECONDS),
    so they do not compete with that start for the GIL and the cores. The next encode is on
    the queue's critical path; this job's publish is not (bench/spool_trace.py: the start of
    a claimed-ahead job took 1.5 ms from the freed slot to its thread running, 0.4 ms so)."""

    YIELD_SECONDS = 0.02

    def __init__(
        self, wake: Callable[[], None] = lambda: None, waiting: Callable[[], bool] = lambda: False
    ) -> None:
        self._wake = wake
        # Whether a job is due and waits for a slot: JobPool.slot_wanted, an Event the loop
        # keeps, so the job's thread never reads the loop's table.
        self._waiting = waiting
        self._started = threading.Condition()
        self._starts = 0

    def ffmpeg_started(self) -> None:
        with self._started:
            self._starts += 1
            self._started.notify_all()
        self._wake()

    def slot_freed(self) -> None:
        with self._started:
            seen = self._starts
        self._wake()
        if self._waiting():
            with self._started:
                self._started.wait_for(lambda: self._starts != seen, self.YIELD_SECONDS)


@dataclass(frozen=True)
class AttemptEnv:
    """What an attempt needs from the daemon: where statuses go (the report seam), where
    outputs go (the storage seam), and whether we still hold the job (the intake's fencing)."""

    layout: SpoolLayout
    settings: Settings
    ffmpeg: Callable[[], str]
    me: WorkerIdentity
    reporter: Reporter
    outputs: OutputStore
    owns: Callable[[str], bool]
    remote_sources: RemoteSources = field(default_factory=RemoteSources)
    slots: SlotSignals = field(default_factory=SlotSignals)


class RunContext:
    """The JobContext handed to a kind for one attempt."""

    def __init__(self, handle: JobHandle, *, env: AttemptEnv, ffmpeg: str, log: IO[str]) -> None:
        self.job_id = handle.job_id
        self.job_dir = env.layout.job_dir(handle.job_id)
        self.settings = env.settings
        self.ffmpeg = ffmpeg
        self.remote_sources = env.remote_sources
        self._handle = handle
        self._env = env
        self._log = log
        self._lock = handle.lock
        self._tracker = ProgressTracker()
        self._tracker.started_at = time.monotonic()
        self._last_write = 0.0
        self._last_written: tuple[str, float] | None = None  # (step, progress)
        self._current_step: str | None = None

    # -- status helpers -------------------------------------------------------------------
    def owned(self) -> bool:
        if self._handle.lost.is_set():
            return False
        if self._env.owns(self.job_id):
            return True
        self._handle.lost.set()
        return False

    def _set(self, status: JobStatus, *, durable: bool = True) -> None:
        """Make `status` the job's and report it (never over the status of a worker that
        took the job over from us). Call with the lock held."""
        previous, self._handle.status = self._handle.status, status
        if self.owned():
            self._env.reporter.write(previous, status, durable=durable)

    def _annotate(self, *, durable: bool = False, **changes: Any) -> None:
        with self._lock:
            self._set(annotate(self._handle.status, now=utcnow(), **changes), durable=durable)

    def _report(self, step: str, fraction: float, speed: float | None) -> None:
        with self._lock:
            overall = self._tracker.update(step, fraction)
            now = time.monotonic()
            if now - self._last_write < self.settings.status_interval_seconds and fraction < 1.0:
                return
            if (step, overall) == self._last_written and fraction >= 1.0:
                return  # the end of a step, already written (ffmpeg's last progress line)
            self._last_write, self._last_written = now, (step, overall)
            eta = self._tracker.eta(now)
            if eta is not None and self._handle.encode_ends_by is not None:
                self._handle.encode_ends_by = now + eta  # only while an ffmpeg runs
            update = progress_update(
                self._handle.status,
                now=utcnow(),
                progress=overall,
                eta_seconds=eta,
                speed=speed,
                step=step,
            )
            with contextlib.suppress(OSError):
                self._set(update, durable=False)

    # -- JobContext -------------------------------------------------------------------------
    def declare_steps(self, steps: list[Step]) -> None:
        self._tracker.declare({s.name: s.weight for s in steps})

    def declare_outputs(self, names: list[str]) -> None:
        # Written with the next status write (progress, the first publish's journal, or the
        # final status), not on its own: protocol.md asks for it before the first publish.
        with self._lock:
            self._handle.status = annotate(self._handle.status, now=utcnow(), planned_outputs=names)

    def run_ffmpeg(
        self,
        args: list[str],
        *,
        step: str,
        expected_seconds: float,
        pass_fds: tuple[int, ...] = (),
    ) -> FfmpegResult:
        if self._handle.encoded.is_set():
            raise RuntimeError("run_ffmpeg after encoded(): the job no longer holds a slot")
        self.check_cancelled()
        limits = Limits(
            deadline=self._handle.deadline,
            stall_seconds=self.settings.limits.stall_seconds,
            kill_grace_seconds=self.settings.kill_grace_seconds,
            nice=self.settings.ffmpeg_nice,
        )

        def started(pid: int) -> None:
            now = time.monotonic()
            self._handle.encode_ends_by = now + self._remaining_seconds(step, expected_seconds, now)
            self._env.slots.ffmpeg_started()

        try:
            result = run_ffmpeg(
                self.ffmpeg,
                args,
                expected_seconds=expected_seconds,
                limits=limits,
                log=self._log,
                on_progress=lambda fraction, speed: self._report(step, fraction, speed),
                cancelled=lambda: self._handle.cancel.is_set() or self._handle.lost.is_set(),
                stopping=self._handle.stop.is_set,
                on_start=started,
                pass_fds=pass_fds,
            )
        except JobError:
            if self._handle.lost.is_set():
                raise OwnershipLost() from None
            if self._handle.stop.is_set():
                raise DaemonStopping() from None
            raise
        self._report(step, 1.0, None)
        # No ffmpeg runs now: until the next one starts, this job's end is unknown (it may
        # go on with in-process work, or publish), so nothing is claimed ahead of it.
        self._handle.encode_ends_by = None
        return result

    def report_progress(self, step: str, fraction: float) -> None:
        self._report(step, fraction, None)

    def _remaining_seconds(self, step: str, expected_seconds: float, now: float) -> float:
        """About how long this job has still to run as an ffmpeg starts (the inbox claims
        ahead by it): the ETA once progress is known, else this command's media seconds at
        1x scaled by its share of the declared steps still to run (an export's first short
        command does not make its whole job look short)."""
        eta = self._tracker.eta(now)
        if eta is not None:
            return eta
        weights, done = self._tracker.weights, self._tracker.done
        left = sum(w for name, w in weights.items() if done.get(name, 0.0) < 1.0)
        share = weights.get(step, 0.0) / left if left > 0 else 0.0
        return expected_seconds / share if share > 0 else math.inf

    def encoded(self) -> None:
        if not self._handle.encoded.is_set():
            self._handle.encoded.set()
            self._env.slots.slot_freed()

    def temp_path(self, name: str) -> Path:
        return self.job_dir / f"{TEMP_PREFIX}{secrets.token_hex(3)}-{name}"

    def publish(self, temp: Path, name: str, info: OutputInfo) -> None:
        # A worker presumed dead must not publish over its successor's work.
        if not self.owned():
            raise OwnershipLost()
        self._env.outputs.make_durable(temp)
        # Journal first: if we die between this write and the publish, recovery finishes it
        # instead of running the job again (each output is published once).
        outputs = [o for o in self._handle.status.outputs if o.path != info.path]
        # A remote output (info.uri) starts its upload here: its id is journalled first.
        upload_id = self._env.outputs.begin(self.job_id, temp, info)
        self._annotate(
            durable=True,
            outputs=[*outputs, info],
            pending_publish=PendingPublish(
                temp=temp.name, path=name, uri=info.uri, upload_id=upload_id
            ),
        )
        _crash_point("SPOOLER_FAULT_EXIT_BEFORE_RENAME")
        _pause_point("SPOOLER_FAULT_PUBLISH_PAUSE")
        gained = self._env.outputs.commit(self.job_id, temp, name, self.check_cancelled)
        published = info.model_copy(update=gained)
        with self._lock:  # written with the next change: recovery tolerates a stale journal
            self._handle.status = annotate(
                self._handle.status,
                now=utcnow(),
                pending_publish=None,
                outputs=[*outputs, published],
            )
        self.log_line(f"# published {name} ({info.size_bytes} bytes)")
        _crash_point("SPOOLER_FAULT_EXIT_AFTER_PUBLISH")

    def warn(self, code: str, message: str, **details: Any) -> None:
        warning = Warning_(code=code, message=message, details=details)
        self._annotate(warnings=[*self._handle.status.warnings, warning])

    def set_preflight(self, report: dict[str, Any]) -> None:
        self._annotate(preflight=report)

    def log_line(self, text: str) -> None:
        self._log.write(text.rstrip("\n") + "\n")
        self._log.flush()

    def check_cancelled(self) -> None:
        if self._handle.lost.is_set():
            raise OwnershipLost()
        if self._handle.cancel.is_set():
            raise JobCancelled()
        if self._handle.stop.is_set():
            raise DaemonStopping()
        if time.monotonic() >= self._handle.deadline:
            raise JobError(ErrorCode.TIMEOUT, "the job ran past its time limit")


def error_info(exc: JobError, *, will_retry: bool = False) -> ErrorInfo:
    return ErrorInfo(code=exc.code, message=exc.message, retryable=will_retry, details=exc.details)


def run_attempt(
    handle: JobHandle, *, env: AttemptEnv, on_done: Callable[[JobHandle], None]
) -> None:
    """Body of a job's thread. Leaves a status that is final or queued, unless the job
    was taken over by another worker, in which case it touches nothing at all."""
    log = structlog.get_logger().bind(job_id=handle.job_id, attempt=handle.status.attempt)
    job_dir = env.layout.job_dir(handle.job_id)
    outcome: JobStatus | None
    try:
        log_fd = open_log_for_append(job_dir / "job.log")
        with os.fdopen(log_fd, "a", encoding="utf-8", errors="replace") as job_log:
            job_log.write(
                f"# attempt {handle.status.attempt} by {env.me.id} at {utcnow().isoformat()}\n"
            )
            outcome = _attempt(handle, env, job_log, log)
            ended = outcome.state if outcome else "abandoned (ownership lost)"
            code = outcome.error.code if outcome and outcome.error else ""
            job_log.write(f"# attempt ended: {ended} {code}\n")
    except Exception as exc:  # the daemon must never crash on a job
        log.exception("job_bookkeeping_failed")
        error = JobError(ErrorCode.INTERNAL, f"internal error: {exc}")
        outcome = _failed(handle, error, env.settings)
    try:
        if outcome is not None and env.owns(handle.job_id):
            if outcome.state is not State.SUCCEEDED:
                # What it published, listed by the status until the outcome replaces it.
                published = [o.path for o in handle.status.outputs]
                _withdraw(env, handle.job_id, published, log)
            _record(handle, outcome, env, log)
            return
        handle.lost.set()
        log.warning("job_ownership_lost", note="another worker took the job over")
    except Exception:  # the slot must come back whatever the bookkeeping met
        log.exception("job_bookkeeping_failed")
        if outcome is not None:
            with handle.lock:
                if handle.status is not outcome:  # not recorded: the loop writes it if ours
                    handle.status, handle.saved = outcome, False
    finally:
        on_done(handle)


def _withdraw(env: AttemptEnv, job_id: str, published: list[str], log: Any) -> None:
    """Remove what a failed attempt left: its published outputs (the status no longer
    lists them) and its temporary files. Best effort: what cannot go stays, logged."""
    try:
        env.outputs.remove(job_id, published)
    except Exception:  # an S3 client raises more than OSError
        log.exception("output_withdrawal_failed", outputs=published)
    try:
        remove_temp_files(env.layout.job_dir(job_id))
    except OSError:
        log.exception("temp_files_removal_failed")


def _record(handle: JobHandle, outcome: JobStatus, env: AttemptEnv, log: Any) -> None:
    """The attempt's status, in memory and on disk; a failed write is retried by the loop."""
    with handle.lock:
        previous, handle.status = handle.status, outcome
        try:
            env.reporter.write(previous, outcome)
        except OSError as exc:
            handle.saved = False
            log.error("status_write_failed", error=str(exc), will_retry=True)
    log.info(
        "job_attempt_ended",
        state=outcome.state.value,
        error=outcome.error.code.value if outcome.error else None,
    )


def note_cancel_requested(handle: JobHandle, env: AttemptEnv) -> None:
    """Called from the loop when it sees the cancel marker of a running job: the status says
    so at once (ffmpeg is stopped within 2 s; the final status follows)."""
    with handle.lock:
        if handle.status.state is not State.RUNNING or handle.status.cancel_requested:
            return  # already final (its write won the lock first), or already said
        previous = handle.status
        handle.status = annotate(previous, now=utcnow(), cancel_requested=True)
        if env.owns(handle.job_id):
            with contextlib.suppress(OSError):
                env.reporter.write(previous, handle.status, durable=False)


def _crash_point(variable: str) -> None:
    """Fault injection for the crash tests: die here as kill -9 would, if asked to."""
    if os.environ.get(variable):
        os._exit(137)


def _pause_point(variable: str) -> None:
    """Fault injection for the tests: a slow storage, `variable` seconds long."""
    if seconds := os.environ.get(variable):
        time.sleep(float(seconds))


def _attempt(handle: JobHandle, env: AttemptEnv, job_log: IO[str], log: Any) -> JobStatus | None:
    if not env.owns(handle.job_id):
        return None
    with handle.lock:
        previous = handle.status
        handle.status = transition(
            previous,
            State.RUNNING,
            now=utcnow(),
            worker=env.me.ref(),
            error=None,
            progress=0.0,
            step=None,
            jobs_ahead=None,
        )
        # Not fsynced: if this write is lost in a crash the job still says queued, and
        # recovery handles a queued job of a dead worker just as well. One fsync less a job.
        env.reporter.write(previous, handle.status, durable=False)
    log.info("job_started", kind=handle.kind.name)
    try:
        ctx = RunContext(handle, env=env, ffmpeg=env.ffmpeg(), log=job_log)
        # Once `run` returns, every output is published: a cancel arriving now is too late.
        handle.kind.run(handle.spec, ctx)
    except OwnershipLost:
        return None
    except JobCancelled:
        return transition(
            handle.status,
            State.CANCELLED,
            now=utcnow(),
            reason="cancelled",
            error=ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled on request"),
        )
    except DaemonStopping:
        # Not the job's fault: back to the queue with the same attempt number.
        return transition(
            handle.status,
            State.QUEUED,
            now=utcnow(),
            reason="daemon_stopping",
            progress=0.0,
            eta_seconds=None,
        )
    except JobError as exc:
        job_log.write(f"# error {exc.code}: {exc.message}\n")
        return _failed(handle, exc, env.settings)
    except OSError as exc:
        code = (
            ErrorCode.DISK_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ErrorCode.INTERNAL
        )
        return _failed(handle, JobError(code, f"{exc.strerror or exc}"), env.settings)
    return transition(handle.status, State.SUCCEEDED, now=utcnow(), reason=None)


def _failed(handle: JobHandle, exc: JobError, settings: Settings) -> JobStatus:
    """Retry transient errors while attempts remain; otherwise fail for good.

    `error.retryable` says whether the daemon will try again, not what the code could do.
    """
    status = handle.status
    now = utcnow()
    if exc.transient and status.attempt < status.max_attempts:
        delay = compute_backoff(status.attempt, settings.retry)
        return transition(
            status,
            State.QUEUED,
            now=now,
            reason=exc.code.value,
            error=error_info(exc, will_retry=True),
            attempt=status.attempt + 1,
            retry_at=now + timedelta(seconds=delay),
            progress=0.0,
            eta_seconds=None,
        )
    return transition(
        status,
        State.FAILED,
        now=now,
        reason=exc.code.value,
        error=error_info(exc, will_retry=False),
    )
