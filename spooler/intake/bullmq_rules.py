"""Pure rules of the BullMQ intake (docs/fleet.md): the Redis key names we add beside
BullMQ's own, the progress payload, the failure reason, the priority mapping, and what a
final status means for the queue. No I/O here; tested in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from spooler.errors import ErrorCode, is_transient
from spooler.status import JobStatus, State

# BullMQ's priorities: 1 is the highest, 2**21 the lowest, 0 means "no priority" (runs before
# every prioritised job). Spool priorities run from -1000 to 1000, higher first.
BULLMQ_PRIORITY_MAX = 2**21
SPOOL_PRIORITY_SPAN = 1000


def bullmq_priority(priority: int) -> int:
    """The job's `priority` (higher first) as BullMQ's (1 first): 1000 -> 1, 0 -> 1001,
    -1000 -> 2001. The web module sets it from the job; never 0 (that would jump the queue)."""
    clamped = max(-SPOOL_PRIORITY_SPAN, min(SPOOL_PRIORITY_SPAN, priority))
    return SPOOL_PRIORITY_SPAN + 1 - clamped


@dataclass(frozen=True)
class QueueKeys:
    """Our keys live under BullMQ's prefix and queue name, outside its own key shapes
    (`<prefix>:<queue>:<jobId>`, `...:lock`, `...:logs`), so no BullMQ script touches them."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.queue}"

    def lock(self, job_id: str) -> str:
        return f"{self.base}:{job_id}:lock"  # BullMQ's: holds the token of the active worker

    def job(self, job_id: str) -> str:
        return f"{self.base}:{job_id}"  # BullMQ's job hash (data, opts, progress, ...)

    @property
    def delayed(self) -> str:
        return f"{self.base}:delayed"  # BullMQ's: score = due time in ms * 4096 + a counter

    @property
    def marker(self) -> str:
        return f"{self.base}:marker"  # BullMQ's: idle workers block on it (BZPOPMIN)

    def cancel(self, job_id: str) -> str:
        """The durable cancel request: set by the web app, read by every worker."""
        return f"{self.base}:spooler:cancel:{job_id}"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub hint carrying a job id: wakes the worker at once (the key is the truth)."""
        return f"{self.base}:spooler:cancel"


def delayed_score(now_ms: int) -> int:
    """The highest `delayed` score due at `now_ms` (BullMQ packs a counter in 12 low bits)."""
    return now_ms * 4096 + 4095


def failure_reason(code: ErrorCode | str, message: str, details: dict[str, Any] | None) -> str:
    """BullMQ's failedReason: a JSON string {code, message, details} (docs/fleet.md)."""
    return json.dumps(
        {"code": str(code), "message": message, "details": details or {}},
        separators=(",", ":"),
        default=str,
    )


def progress_payload(status: JobStatus) -> dict[str, Any]:
    """What `job.updateProgress` carries: the status fields a progress bar needs."""
    return {
        "state": status.state.value,
        "progress": round(status.progress, 4),
        "step": status.step,
        "etaSeconds": status.eta_seconds,
        "speed": status.speed,
        "attempt": status.attempt,
        "cancelRequested": status.cancel_requested,
    }


def result_value(status: JobStatus, worker_id: str) -> dict[str, Any]:
    """The processor's return value for a succeeded job: outputs and warnings."""
    data = status.to_json()
    return {
        "jobId": status.job_id,
        "outputs": data["outputs"],
        "warnings": data["warnings"],
        "worker": worker_id,
    }


class Verdict(Enum):
    COMPLETE = "complete"  # return the result: BullMQ completes the job
    RETRY = "retry"  # a plain error: BullMQ retries while attempts remain, with backoff
    FAIL = "fail"  # UnrecoverableError: failed for good, whatever attempts remain
    REQUEUE = "requeue"  # back to waiting without using an attempt (shutdown)
    DROP = "drop"  # the lock is not ours: touch nothing, the new holder reports


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    result: dict[str, Any] | None = None
    reason: str | None = None


def outcome_of(status: JobStatus | None, worker_id: str) -> Outcome:
    """What the final (or requeued) status of an attempt means for the queue.

    None means the attempt was abandoned (ownership lost). Retries belong to BullMQ (the
    attempt runs with max_attempts 1), so a transient failure is RETRY: BullMQ decides from
    the job's attempts and backoff whether it runs again."""
    if status is None:
        return Outcome(Verdict.DROP)
    if status.state is State.SUCCEEDED:
        return Outcome(Verdict.COMPLETE, result=result_value(status, worker_id))
    if status.state is State.QUEUED:
        return Outcome(Verdict.REQUEUE)
    error = status.error
    code = error.code if error else ErrorCode.INTERNAL
    reason = failure_reason(
        code, error.message if error else "no error recorded", error.details if error else {}
    )
    if status.state is State.FAILED and is_transient(code):
        return Outcome(Verdict.RETRY, reason=reason)
    return Outcome(Verdict.FAIL, reason=reason)
