"""What a job's status becomes when its worker is gone (crashed, frozen past its lease, or
shut down and released it): a pure function, tested as a table (tests/test_takeover.py)
like the transition table.

- running, every planned output published -> succeeded (finished_by_recovery);
- any, the job file no longer loads -> failed with the loader's error;
- running, attempts left -> queued, attempt + 1 (worker_lost, retryable);
- running, no attempts left -> failed (worker_lost);
- queued -> queued (taken_over), to run here.

A running job's partial outputs are withdrawn before it runs again: the rerun publishes
them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from spooler.errors import ErrorCode
from spooler.status import ErrorInfo, JobStatus, State, WorkerRef, transition


@dataclass(frozen=True)
class Takeover:
    status: JobStatus
    withdraw: list[str] = field(default_factory=list)  # output names to remove first


def take_over(
    status: JobStatus,
    *,
    published: bool,
    load_error: ErrorInfo | None,
    me: WorkerRef,
    previous_owner: str,
    now: datetime,
) -> Takeover:
    if status.state is State.RUNNING and published:
        # It died after its last publish: the work is done; never run it again.
        return Takeover(
            transition(
                status,
                State.SUCCEEDED,
                now=now,
                reason="finished_by_recovery",
                worker=me,
                pending_publish=None,
            )
        )
    partial = [o.path for o in status.outputs] if status.state is State.RUNNING else []
    if load_error is not None:
        failed = transition(
            status, State.FAILED, now=now, reason="unreadable_on_recovery", worker=me,
            error=load_error,
        )  # fmt: skip
        return Takeover(failed, partial)
    if status.state is State.QUEUED:
        return Takeover(transition(status, State.QUEUED, now=now, reason="taken_over", worker=me))
    lost = ErrorInfo(
        code=ErrorCode.WORKER_LOST,
        retryable=status.attempt < status.max_attempts,
        message=f"worker {previous_owner} stopped while running the job",
    )
    if lost.retryable:
        requeued = transition(
            status, State.QUEUED, now=now, reason="worker_lost", attempt=status.attempt + 1,
            worker=me, error=lost, progress=0.0, eta_seconds=None,
        )  # fmt: skip
        return Takeover(requeued, partial)
    failed = transition(status, State.FAILED, now=now, reason="worker_lost", worker=me, error=lost)
    return Takeover(failed, partial)
