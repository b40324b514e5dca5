"""The takeover rules (spooler/takeover.py) as a table, like the transition table, and the
pure pieces around recovery: heartbeats as untrusted input, leases, config reload."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from spooler.config import S3Settings, Settings, reload_plan
from spooler.errors import ErrorCode
from spooler.status import (
    ErrorInfo,
    JobStatus,
    OutputInfo,
    State,
    WorkerRef,
    new_status,
    transition,
)
from spooler.takeover import take_over
from spooler.worker import Heartbeat, lease_of, parse_heartbeat

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ME = WorkerRef(id="me-1-abcdef", host="me", pid=1)
BROKEN = ErrorInfo(code=ErrorCode.INVALID_JOB, message="angles: over the limit")


def found(state: State, attempt: int = 1, max_attempts: int = 3) -> JobStatus:
    status = new_status("j", State.QUEUED, now=NOW, submitted_at=NOW, worker=None,
                        max_attempts=max_attempts)  # fmt: skip
    status = status.model_copy(update={"attempt": attempt})
    if state is State.RUNNING:
        status = transition(status, State.RUNNING, now=NOW)
        status = status.model_copy(
            update={
                "outputs": [OutputInfo(path="a.mp4", size_bytes=1)],
                "planned_outputs": ["a.mp4", "b.jpg"],
            }
        )
    return status


@pytest.mark.parametrize(
    ("state", "published", "load_error", "attempt", "expected", "reason", "withdrawn"),
    [
        (State.RUNNING, True, None, 1, State.SUCCEEDED, "finished_by_recovery", []),
        (State.RUNNING, True, BROKEN, 3, State.SUCCEEDED, "finished_by_recovery", []),
        (State.RUNNING, False, BROKEN, 1, State.FAILED, "unreadable_on_recovery", ["a.mp4"]),
        (State.QUEUED, False, BROKEN, 1, State.FAILED, "unreadable_on_recovery", []),
        (State.RUNNING, False, None, 1, State.QUEUED, "worker_lost", ["a.mp4"]),
        (State.RUNNING, False, None, 3, State.FAILED, "worker_lost", ["a.mp4"]),
        (State.QUEUED, False, None, 1, State.QUEUED, "taken_over", []),
    ],
)
def test_takeover_table(
    state: State,
    published: bool,
    load_error: ErrorInfo | None,
    attempt: int,
    expected: State,
    reason: str,
    withdrawn: list[str],
) -> None:
    result = take_over(
        found(state, attempt),
        published=published,
        load_error=load_error,
        me=ME,
        previous_owner="dead-2-abcdef",
        now=NOW,
    )
    assert result.status.state is expected
    assert result.status.history[-1].reason == reason
    assert result.status.worker == ME
    assert result.withdraw == withdrawn
    if expected is State.QUEUED and reason == "worker_lost":
        assert result.status.attempt == attempt + 1
        assert result.status.error is not None and result.status.error.retryable
        assert result.status.outputs == [] and result.status.planned_outputs == []
    if expected is State.FAILED and load_error is not None:
        assert result.status.error == load_error
    if expected is State.SUCCEEDED:
        assert result.status.step == "done" and result.status.pending_publish is None


def beat(**data: object) -> dict[str, object]:
    return {"workerId": "w-1-abcdef", "host": "h", "pid": 42, **data}


@pytest.mark.parametrize(
    "data",
    [
        [],
        "x",
        beat(workerId="../../etc"),
        beat(workerId=7),
        beat(pid="42"),
        beat(pid=True),
        beat(pid=-1),
        beat(host=None),
    ],
)
def test_a_heartbeat_that_is_not_one_is_ignored(data: object) -> None:
    assert parse_heartbeat(data, 0.0) is None


def test_a_heartbeat_announces_its_lease_and_the_cap_bounds_it() -> None:
    parsed = parse_heartbeat(beat(leaseSeconds=20, heartbeatSeconds=5), 0.0)
    assert isinstance(parsed, Heartbeat)
    assert lease_of(parsed, default_lease=3, max_lease=600) == 20
    assert lease_of(parsed, default_lease=3, max_lease=10) == 10
    old = parse_heartbeat(beat(), 0.0)
    assert old is not None and lease_of(old, default_lease=3, max_lease=600) == 3
    for bad in ("20", True, -5, 0, 1e300):
        odd = parse_heartbeat(beat(leaseSeconds=bad), 0.0)
        assert odd is not None and lease_of(odd, default_lease=3, max_lease=600) == 3


def test_reload_applies_run_time_settings_and_keeps_the_rest_until_restart(tmp_path: Path) -> None:
    current = Settings(spool_dir=tmp_path / "a", max_jobs=1, watch_mode="auto")
    fresh = Settings(
        spool_dir=tmp_path / "b", max_jobs=3, watch_mode="polling", retention={"succeeded_days": 1}
    )
    plan = reload_plan(current, fresh)
    assert plan.settings.max_jobs == 3
    assert plan.settings.retention.succeeded_days == 1
    assert plan.settings.spool_dir == tmp_path / "a"
    assert plan.settings.watch_mode == "auto"
    assert sorted(plan.applied) == ["max_jobs", "retention"]
    assert sorted(plan.needs_restart) == ["spool_dir", "watch_mode"]
    # S3 too: the output store is built at start (a bucket allowed by a reload alone
    # would have its outputs kept in the job folder under an s3:// uri)
    s3 = reload_plan(current, current.model_copy(update={"s3": S3Settings(allowed_buckets=["b"])}))
    assert s3.needs_restart == ["s3"] and s3.settings.s3 == current.s3
