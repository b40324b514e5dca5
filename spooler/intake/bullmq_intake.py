"""The BullMQ intake: the same jobs, taken from a BullMQ queue in Redis (docs/fleet.md).

BullMQ for Python hands jobs to an asyncio processor and renews their locks on its own
event loop, so that loop runs in a thread of its own and never waits on ffmpeg:

1. the processor (event loop) checks the job id and the durable cancel key, loads the raw
   `job.data` with `loader.load_job` (an invalid job: `UnrecoverableError`, same codes),
   then parks the job and waits on a future;
2. `take` (daemon loop) turns parked jobs into handles, as many as there are free slots,
   and the daemon's pool runs them in job threads as it runs spool jobs;
3. the attempt's statuses come back through the report seam (`status_written`): progress
   becomes `job.updateProgress`, the final status resolves the future, and the processor
   returns the result or raises (bullmq_rules.outcome_of decides how);
4. `owns` is "the job's lock in Redis still holds our token", read right before each
   publish and every loop turn; a worker that lost its lock drops the job (fencing);
5. `cancel_requested` reads a set fed by the durable cancel keys (polled) and a pub/sub
   hint; `release` (shutdown) moves the job back to waiting without using an attempt.

Recovery is BullMQ's own (stalled jobs go back to waiting), so `housekeeping` has nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from bullmq import Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.fsutil import atomic_write_bytes, is_real_dir, remove_temp_files
from spooler.intake.bullmq_rules import (
    Outcome,
    QueueKeys,
    Verdict,
    delayed_score,
    failure_reason,
    outcome_of,
    progress_payload,
)
from spooler.jobtable import JobTable
from spooler.layout import is_valid_job_id
from spooler.loader import LoadedJob, load_job
from spooler.policy import clamp_priority
from spooler.report import Reporter
from spooler.runner import JobHandle
from spooler.status import JobStatus, State, new_status
from spooler.worker import WorkerIdentity


class TransientFailure(Exception):
    """A failure BullMQ retries with the job's attempts and backoff; str() is the reason."""


@dataclass
class _Parked:
    """A job the processor holds (BullMQ has it active, with our token on its lock)."""

    job: Any  # bullmq.Job
    token: str
    loaded: LoadedJob
    raw: bytes
    done: asyncio.Future[Outcome]
    confirmed: float = field(default_factory=time.monotonic)  # lock last seen ours
    lost: bool = False


class BullmqIntake:
    name = "bullmq"
    use_leases = False  # the daemon asks; inbox files are not ours to check

    def __init__(
        self,
        settings: Settings,
        table: JobTable,
        reporter: Reporter,
        me: WorkerIdentity,
        wake: threading.Event,
    ) -> None:
        self.settings = settings
        self.layout = table.layout
        self.table = table
        self.reporter = reporter
        self.me = me
        self.wake = wake
        self.log = structlog.get_logger().bind(worker=me.id, intake="bullmq")
        self.claimed_count = 0
        conf = settings.bullmq
        self.keys = QueueKeys(conf.prefix, conf.queue)
        # Read from the daemon's and the job threads (owns): short timeouts, never long waits.
        self._redis = redis.Redis.from_url(
            conf.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._parked: dict[str, _Parked] = {}
        self._arrivals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._cancels: set[str] = set()
        self._mutex = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failed_to_start: BaseException | None = None

    # -- lifecycle (called by the daemon) ----------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._run_loop, name="bullmq", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._failed_to_start is not None:
            raise RuntimeError(f"BullMQ worker did not start: {self._failed_to_start}")

    def close(self) -> None:
        """After the daemon drained: give back parked jobs, close the worker, stop the loop."""
        for job_id in self._drain_arrivals():
            self.release(job_id)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(30)
        self._redis.close()

    def check(self, clocks: Clocks) -> bool:
        return False  # the worker's thread reconnects by itself

    def describe(self) -> dict[str, str]:
        conf = self.settings.bullmq
        return {"queue": conf.queue, "prefix": conf.prefix}

    # -- the seam ------------------------------------------------------------------------------
    def take(self, clocks: Clocks, *, rescan: bool = True) -> list[JobHandle]:
        taken: list[JobHandle] = []
        while len(taken) < self.table.free_slots():
            try:
                job_id = self._arrivals.get_nowait()
            except queue.Empty:
                break
            parked = self._get(job_id)
            if parked is None or parked.done.done():
                continue
            if job_id in self._cancels:
                self._resolve(parked, _cancelled("cancelled before it started"))
                continue
            try:
                taken.append(self._establish(job_id, parked, clocks))
            except Exception as exc:  # a job folder we cannot write: let BullMQ retry it
                self.log.exception("job_establish_failed", job_id=job_id)
                reason = failure_reason(ErrorCode.INTERNAL, f"cannot set up the job: {exc}", {})
                self._resolve(parked, Outcome(Verdict.RETRY, reason=reason))
        return taken

    def cancel_requested(self, job_id: str) -> bool:
        return job_id in self._cancels

    def owns(self, job_id: str) -> bool:
        """Is the job's lock still ours? Asked right before each publish and every loop turn.
        While Redis cannot be reached, yes for as long as a lock could still be alive."""
        parked = self._get(job_id)
        if parked is None or parked.lost:
            return False
        now = time.monotonic()
        try:
            holder = self._redis.get(self.keys.lock(job_id))
        except redis.RedisError:
            if now - parked.confirmed < self.settings.bullmq.lock_duration_ms / 1000:
                return True
            holder = None  # the lock has expired by now, wherever Redis is: not ours
        if isinstance(holder, bytes) and holder.decode() == parked.token:
            parked.confirmed = now
            return True
        parked.lost = True
        self.log.warning("job_lock_lost", job_id=job_id)
        self._resolve(parked, Outcome(Verdict.DROP))
        return False

    def release(self, job_id: str) -> None:
        parked = self._get(job_id)
        if parked is not None:
            self._resolve(parked, Outcome(Verdict.REQUEUE))

    def housekeeping(self, clocks: Clocks) -> list[JobHandle]:
        return []  # BullMQ's stalled-job check moves jobs of dead workers back to waiting

    # -- the report sink -----------------------------------------------------------------------
    def status_written(self, previous: JobStatus | None, current: JobStatus) -> None:
        parked = self._get(current.job_id)
        if parked is None or parked.done.done():
            return
        if current.is_final:
            self._resolve(parked, outcome_of(current, self.me.id))
        elif current.state is State.RUNNING and self._loop is not None:
            # Fire and forget: a job thread never waits on Redis for a progress bar.
            asyncio.run_coroutine_threadsafe(
                self._progress(parked, progress_payload(current)), self._loop
            )

    # -- daemon-loop side helpers ------------------------------------------------------------
    def _get(self, job_id: str) -> _Parked | None:
        with self._mutex:
            return self._parked.get(job_id)

    def _resolve(self, parked: _Parked, outcome: Outcome) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def settle() -> None:
            if not parked.done.done():
                parked.done.set_result(outcome)

        loop.call_soon_threadsafe(settle)

    def _drain_arrivals(self) -> list[str]:
        ids = []
        while True:
            try:
                ids.append(self._arrivals.get_nowait())
            except queue.Empty:
                return ids

    def _establish(self, job_id: str, parked: _Parked, clocks: Clocks) -> JobHandle:
        """The job's working folder (outputs, job.log, status.json) and its first status."""
        job_dir = self.layout.job_dir(job_id)
        with contextlib.suppress(FileExistsError):
            job_dir.mkdir()  # a retry, or a shared volume: the same job's folder again
        if not is_real_dir(job_dir):
            raise JobError(ErrorCode.NOT_A_FILE, f"{job_dir} is not a directory")
        remove_temp_files(job_dir)  # an earlier attempt's leftovers
        atomic_write_bytes(self.layout.job_file(job_id), parked.raw, durable=False)
        spec, kind = parked.loaded.spec, parked.loaded.kind
        attempt = int(parked.job.attemptsMade) + 1
        submitted = datetime.fromtimestamp(int(parked.job.timestamp) / 1000, UTC)
        status = new_status(
            job_id,
            State.QUEUED,
            now=clocks.wall,
            submitted_at=submitted,
            worker=self.me.ref(),
            max_attempts=1,
            kind=kind.name,
            priority=clamp_priority(spec.priority, self.settings.limits),
            metadata=spec.metadata,
        )
        # Retries are BullMQ's: the attempt is the last one as far as the runner knows.
        status = status.model_copy(update={"attempt": attempt, "max_attempts": attempt})
        self.reporter.write(None, status, durable=False)
        self.claimed_count += 1
        self.log.info("job_claimed", job_id=job_id, attempt=attempt)
        return JobHandle(job_id, spec, kind, status, deadline=0.0)

    # -- the event loop thread ---------------------------------------------------------------
    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._failed_to_start = exc
            self.log.exception("bullmq_loop_failed")
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        conf = self.settings.bullmq
        self._stop = asyncio.Event()
        self._aio = aioredis.Redis.from_url(conf.redis_url)
        await self._aio.ping()  # fail fast at start on a wrong URL
        worker = Worker(
            conf.queue,
            self._process,
            {
                "connection": conf.redis_url,
                "prefix": conf.prefix,
                "name": self.me.id,
                "concurrency": self.settings.max_jobs,
                "lockDuration": conf.lock_duration_ms,
                "stalledInterval": conf.stalled_interval_ms,
                "maxStalledCount": conf.max_stalled_count,
                "runRetryDelay": 500,  # reconnect soon after a Redis restart
            },
        )
        worker.on("completed", self._on_completed)
        worker.on("failed", self._on_failed)
        worker.on("error", self._on_error)
        tasks = [
            asyncio.ensure_future(self._poll_cancels()),
            asyncio.ensure_future(self._listen_cancels()),
            asyncio.ensure_future(self._nudge_due_retries()),
        ]
        self.log.info("bullmq_worker_started", queue=conf.queue, concurrency=self.settings.max_jobs)
        self._ready.set()
        await self._stop.wait()
        await worker.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._aio.aclose()
        self.log.info("bullmq_worker_closed")

    async def _process(self, job: Any, token: str) -> dict[str, Any]:
        job_id = str(job.id)
        if not is_valid_job_id(job_id):
            raise UnrecoverableError(
                failure_reason(ErrorCode.INVALID_ID, "job ids are 1-128 of A-Z a-z 0-9 _ -", {})
            )
        if await self._aio.exists(self.keys.cancel(job_id)):
            raise UnrecoverableError(
                failure_reason(ErrorCode.CANCELLED, "cancelled before it started", {})
            )
        raw = await self._aio.hget(self.keys.job(job_id), "data")
        try:
            loaded, raw_bytes = self._load(raw)
        except JobError as exc:
            self.log.warning(
                "job_rejected", job_id=job_id, code=exc.code.value, message=exc.message
            )
            raise UnrecoverableError(failure_reason(exc.code, exc.message, exc.details)) from None
        loop = asyncio.get_running_loop()
        parked = _Parked(job, token, loaded, raw_bytes, loop.create_future())
        with self._mutex:
            self._parked[job_id] = parked
        self._arrivals.put(job_id)
        self.wake.set()
        try:
            outcome = await parked.done
        finally:
            with self._mutex:
                self._parked.pop(job_id, None)
                self._cancels.discard(job_id)
        return await self._finish(job, token, outcome)

    def _load(self, raw: Any) -> tuple[LoadedJob, bytes]:
        """job.data as the loader sees a job file: bytes, capped, strictly decoded."""
        data = raw if isinstance(raw, bytes) else str(raw or "").encode()
        limit = self.settings.limits.max_job_file_bytes
        if len(data) > limit:
            raise JobError(
                ErrorCode.TOO_LARGE,
                f"job data is {len(data)} bytes, over {limit}",
                {"size": len(data), "limit": limit},
            )
        return load_job(data, self.settings), data

    async def _finish(self, job: Any, token: str, outcome: Outcome) -> dict[str, Any]:
        verdict = outcome.verdict
        self.log.info("job_outcome", job_id=str(job.id), verdict=verdict.value)
        if verdict is Verdict.COMPLETE:
            assert outcome.result is not None
            return outcome.result  # BullMQ completes it, only if the lock is still ours
        if verdict is Verdict.RETRY:
            raise TransientFailure(outcome.reason)
        if verdict is Verdict.FAIL:
            raise UnrecoverableError(outcome.reason)
        if verdict is Verdict.REQUEUE:
            with contextlib.suppress(Exception):  # lock gone: the stalled check requeues it
                await job.moveToDelayed(int(time.time() * 1000), token)
        raise DelayedError()  # the worker leaves the job alone: requeued, or not ours

    async def _progress(self, parked: _Parked, payload: dict[str, Any]) -> None:
        try:
            await parked.job.updateProgress(payload)
        except Exception as exc:
            self.log.warning("progress_update_failed", job_id=str(parked.job.id), error=str(exc))

    async def _poll_cancels(self) -> None:
        """The durable cancel keys of parked jobs: no reconnect can lose a cancel."""
        interval = self.settings.bullmq.cancel_poll_seconds
        while True:
            await asyncio.sleep(interval)
            with self._mutex:
                ids = [i for i in self._parked if i not in self._cancels]
            if not ids:
                continue
            try:
                found = await self._aio.exists(*[self.keys.cancel(i) for i in ids])
                if found:
                    for job_id in ids:
                        if await self._aio.exists(self.keys.cancel(job_id)):
                            self._note_cancel(job_id)
            except redis.RedisError as exc:
                self.log.debug("cancel_poll_failed", error=str(exc))

    async def _nudge_due_retries(self) -> None:
        """Work around BullMQ for Python 3.4.4: an idle worker does not promote a retry whose
        backoff is 5 s or more (it sleeps past it until another job arrives). Once a second,
        if a delayed job is due, add the marker an idle worker waits on: it wakes and its
        moveToActive promotes the job. Harmless when nothing is due or the worker is busy."""
        while True:
            await asyncio.sleep(1.0)
            try:
                due = await self._aio.zrangebyscore(
                    self.keys.delayed, "-inf", delayed_score(int(time.time() * 1000)), 0, 1
                )
                if due:
                    await self._aio.zadd(self.keys.marker, {"0": 0})
            except redis.RedisError as exc:
                self.log.debug("retry_nudge_failed", error=str(exc))

    async def _listen_cancels(self) -> None:
        """The pub/sub hint: a cancel reaches a running job at once (the key is the truth)."""
        while True:
            try:
                pubsub = self._aio.pubsub()
                await pubsub.subscribe(self.keys.cancel_channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message.get("data")
                        job_id = data.decode() if isinstance(data, bytes) else str(data)
                        if self._get(job_id) is not None:
                            self._note_cancel(job_id)
            except redis.RedisError as exc:
                self.log.debug("cancel_listen_failed", error=str(exc))
                await asyncio.sleep(0.5)

    def _note_cancel(self, job_id: str) -> None:
        with self._mutex:
            self._cancels.add(job_id)
        self.log.info("job_cancel_seen", job_id=job_id)
        self.wake.set()

    def _on_completed(self, job: Any, result: Any) -> None:
        # The one line per completion the fleet tests count: BullMQ accepted it.
        self.log.info("queue_job_completed", job_id=str(job.id))

    def _on_failed(self, job: Any, error: BaseException) -> None:
        if isinstance(error, DelayedError):
            return
        self.log.info("queue_job_failed", job_id=str(job.id), reason=str(error))

    def _on_error(self, error: BaseException, *args: Any) -> None:
        self.log.warning("bullmq_worker_error", error=str(error))


def _cancelled(message: str) -> Outcome:
    return Outcome(Verdict.FAIL, reason=failure_reason(ErrorCode.CANCELLED, message, {}))
