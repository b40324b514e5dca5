"""The bounded pool: one thread per running job (each drives its own ffmpeg processes),
at most `max_jobs` encoding at once (JobTable.free_slots); queued jobs wait for a slot or
their retry time; cancels and fencing are checked every loop turn.

Only the loop thread calls these methods; a job's thread hands its handle back through
`done` and wakes the loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from spooler.clock import Clocks
from spooler.errors import ErrorCode
from spooler.intake import Intake
from spooler.jobtable import JobTable
from spooler.policy import effective_timeout
from spooler.recovery import monotonic_due
from spooler.report import Reporter
from spooler.runner import AttemptEnv, JobHandle, note_cancel_requested, run_attempt
from spooler.status import ErrorInfo, State, transition

FLUSH_DELAY_MIN = 1.0  # seconds before a failed status write is tried again
FLUSH_DELAY_MAX = 60.0


class JobPool:
    def __init__(
        self,
        table: JobTable,
        intake: Intake,
        reporter: Reporter,
        env: Callable[[], AttemptEnv],
        wake: threading.Event,
    ) -> None:
        self.table = table
        self.intake = intake
        self.reporter = reporter
        self.env = env  # the settings of the moment: a reload applies to jobs started later
        self.wake = wake
        self.done: queue.Queue[JobHandle] = queue.Queue()
        # Set by the loop while a job is due to start and waits for a slot: read by job
        # threads (SlotSignals), which never touch the table itself.
        self.slot_wanted = threading.Event()
        self.started_count = 0  # attempts started since the daemon started
        self._flush_after = 0.0  # flush_unsaved's next try (monotonic), after a failure
        self._flush_delay = 0.0  # the wait after the last failed try; 0 after a success
        self.log = structlog.get_logger()

    def queue_or_start(self, handle: JobHandle, clocks: Clocks) -> None:
        if self.table.free_slots() > 0 and handle.not_before <= clocks.monotonic:
            self.start(handle, clocks)
        else:
            self.table.waiting[handle.job_id] = handle

    def start(self, handle: JobHandle, clocks: Clocks) -> None:
        env = self.env()
        handle.deadline = clocks.monotonic + effective_timeout(
            handle.spec.timeout_seconds, env.settings.limits
        )
        thread = threading.Thread(
            target=run_attempt,
            kwargs={"handle": handle, "env": env, "on_done": self._job_done},
            name=f"job-{handle.job_id}",
            daemon=True,
        )
        handle.thread = thread
        # This attempt's own run state (a retry's handle comes back from `reap`).
        handle.encoded.clear()
        handle.encode_ends_by = None
        self.table.running[handle.job_id] = handle
        self.started_count += 1
        thread.start()

    def _job_done(self, handle: JobHandle) -> None:
        """Called from the job's thread: hand it back and wake the loop (a slot is free)."""
        self.done.put(handle)
        self.wake.set()

    def reap(self, clocks: Clocks, *, stopping: bool) -> bool:
        """Take back finished attempts: a retry waits (or is released when stopping), a
        final job is remembered, a job another worker took over is forgotten. True if a
        slot was freed: the caller's turn goes on to fill it (no second turn for that)."""
        reaped = False
        while True:
            try:
                handle = self.done.get_nowait()
            except queue.Empty:
                return reaped
            reaped = True
            if handle.thread is not None:
                handle.thread.join()
            self.table.running.pop(handle.job_id, None)
            if not handle.saved:
                self.table.unsaved[handle.job_id] = handle
            if handle.lost.is_set():
                pass  # its new owner has it; nothing of ours to record
            elif handle.status.state is State.QUEUED:
                handle.not_before = monotonic_due(handle.status.retry_at, clocks)
                if stopping:
                    self._release(handle)
                else:
                    handle.cancel.clear()
                    self.table.waiting[handle.job_id] = handle
            else:
                self.table.remember_final(handle.status)

    def _release(self, handle: JobHandle) -> None:
        """Give a retry back to the spool as the daemon stops; one that cannot be (a
        read-only disk) stays ours, and recovery queues it again at the next start."""
        try:
            self.intake.release(handle.job_id)
        except OSError:
            self.log.exception("release_failed", job_id=handle.job_id)

    def note_waiting(self, clocks: Clocks) -> None:
        """Say whether a job is due to start and waits for a slot (slot_wanted)."""
        due = any(h.not_before <= clocks.monotonic for h in self.table.waiting.values())
        if due:
            self.slot_wanted.set()
        else:
            self.slot_wanted.clear()

    def start_waiting(self, clocks: Clocks) -> None:
        """Retries and jobs taken over, highest priority first, as slots allow."""
        due = [h for h in self.table.waiting.values() if h.not_before <= clocks.monotonic]
        for handle in sorted(due, key=lambda h: (-h.status.priority, h.status.submitted_at)):
            if self.table.free_slots() <= 0:
                return
            del self.table.waiting[handle.job_id]
            self.start(handle, clocks)

    def flush_unsaved(self, clocks: Clocks) -> None:
        """Statuses a full or read-only disk kept from being written: tried again, less
        often while they keep failing (1 s, doubling to a minute). A job running again
        writes its own."""
        if clocks.monotonic < self._flush_after:
            return
        for job_id, handle in list(self.table.unsaved.items()):
            if job_id not in self.table.running and self.intake.owns(job_id):
                with handle.lock:
                    try:
                        self.reporter.write(None, handle.status)
                    except OSError as exc:
                        doubled = max(FLUSH_DELAY_MIN, 2 * self._flush_delay)
                        self._flush_delay = min(FLUSH_DELAY_MAX, doubled)
                        self._flush_after = clocks.monotonic + self._flush_delay
                        self.log.warning(
                            "status_write_failed",
                            job_id=job_id,
                            error=str(exc),
                            retry_in=self._flush_delay,
                        )
                        return
                    handle.saved = True
                self.log.info("status_write_recovered", job_id=job_id)
            del self.table.unsaved[job_id]
        self._flush_delay = 0.0

    def check_cancels(self, clocks: Clocks) -> None:
        """Cancel requests, and fencing: a job we no longer own was taken over while we
        were presumed dead (a stalled loop, a suspended host); drop it, touch nothing."""
        env = self.env()
        for handle in self.table.running.values():
            if not handle.lost.is_set() and not self.intake.owns(handle.job_id):
                self.log.warning("job_ownership_lost", job_id=handle.job_id)
                handle.lost.set()
            if not handle.cancel.is_set() and self.intake.cancel_requested(handle.job_id):
                self.log.info("job_cancel_requested", job_id=handle.job_id)
                handle.cancel.set()
                note_cancel_requested(handle, env)
        for job_id in list(self.table.waiting):
            if not self.intake.owns(job_id):
                self.log.warning("job_ownership_lost", job_id=job_id)
                del self.table.waiting[job_id]
            elif self.intake.cancel_requested(job_id):
                handle = self.table.waiting.pop(job_id)
                previous, handle.status = (
                    handle.status,
                    transition(
                        handle.status,
                        State.CANCELLED,
                        now=clocks.wall,
                        reason="cancelled",
                        error=ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled on request"),
                    ),
                )
                try:
                    self.reporter.write(previous, handle.status)
                except OSError as exc:  # a full disk: the loop writes it again
                    handle.saved = False
                    self.table.unsaved[job_id] = handle
                    self.log.warning("status_write_failed", job_id=job_id, error=str(exc))
                self.table.remember_final(handle.status)
                self.log.info("job_cancelled", job_id=job_id, while_state="queued")

    def stop_all(self) -> None:
        for handle in self.table.running.values():
            if not handle.stop.is_set():
                self.log.info("stopping_job", job_id=handle.job_id)
                handle.stop.set()
