"""Pure scheduling decisions: queue order with aging, retry backoff, timeouts, retention."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from spooler.config import LimitSettings, RetentionSettings, RetrySettings
from spooler.status import State

# Share of a heartbeat period one pass over a spool folder (inbox, claims, rejected/, trash/)
# may take in the loop thread: what is left waits for the next pass, so heartbeats, cancels
# and claims never wait behind a folder a client filled.
PASS_BUDGET = 0.5


@dataclass(frozen=True)
class Candidate:
    """A job that could be started: an unclaimed inbox file or an owned queued job."""

    job_id: str
    priority: int
    submitted: float  # seconds since the epoch (inbox file mtime, or the status's)


def clamp_priority(priority: int, limits: LimitSettings) -> int:
    return max(limits.min_priority, min(limits.max_priority, priority))


def effective_priority(candidate: Candidate, now: float, limits: LimitSettings) -> float:
    """Priority plus one step for every `aging_seconds_per_priority` waited: nothing starves."""
    waited = max(0.0, now - candidate.submitted)
    base = clamp_priority(candidate.priority, limits)
    return base + waited / limits.aging_seconds_per_priority


def order_candidates(
    candidates: Iterable[Candidate], now: float, limits: LimitSettings
) -> list[Candidate]:
    """Highest effective priority first; then oldest; then id, so every daemon agrees."""
    return sorted(
        candidates,
        key=lambda c: (-effective_priority(c, now, limits), c.submitted, c.job_id),
    )


def compute_backoff(attempt: int, retry: RetrySettings, rand: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`: exponential, capped, with proportional jitter."""
    growth: float = 2.0 ** max(0, attempt - 1)
    delay = min(retry.backoff_max_seconds, retry.backoff_base_seconds * growth)
    spread = delay * retry.jitter
    draw = (rand or random.Random()).uniform(-spread, spread)  # noqa: S311 - not for secrets
    return max(0.0, delay + draw)


def effective_timeout(requested: float | None, limits: LimitSettings) -> float:
    return min(requested or limits.default_timeout_seconds, limits.max_timeout_seconds)


def effective_max_attempts(requested: int | None, retry: RetrySettings) -> int:
    return min(requested or retry.max_attempts, retry.max_attempts)


def retention_days(state: State, retention: RetentionSettings) -> float | None:
    """Days to keep a finished job, None for active states (never deleted)."""
    return {
        State.SUCCEEDED: retention.succeeded_days,
        State.FAILED: retention.failed_days,
        State.CANCELLED: retention.cancelled_days,
        State.REJECTED: retention.rejected_days,
    }.get(state)


def is_expired(
    state: State, finished_at: datetime | None, now: datetime, retention: RetentionSettings
) -> bool:
    days = retention_days(state, retention)
    if days is None or days <= 0 or finished_at is None:
        return False
    return now - finished_at > timedelta(days=days)


def rejected_expired(moved_at: float, server_now: float, days: float) -> bool:
    """An entry of rejected/ (aged by its .error.json's mtime, the file server's clock)."""
    return days > 0 and moved_at < server_now - days * 86400


def inbox_file_ready(
    *,
    regular: bool,
    unchanged_for: float,
    settle_seconds: float,
    writer_closed: Callable[[], bool],
    parses: Callable[[], bool],
) -> bool:
    """Is an inbox file fully written?

    Not a regular file: nothing to wait for (it is refused as it is). Unchanged for
    settle_seconds: yes. Sooner only where the OS can tell that no writer has it open any
    more (a Linux read lease; `writer_closed`) and it already parses: a writer that reopens
    between chunks would otherwise be caught half-way. The two checks are I/O, so they are
    passed as callables and asked only when needed.
    """
    if not regular or unchanged_for >= settle_seconds:
        return True
    return writer_closed() and parses()
