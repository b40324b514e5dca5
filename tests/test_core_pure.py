"""The pure core: names, job parsing, state machine, scheduling policy, progress."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spooler.config import LimitSettings, RetentionSettings, RetrySettings
from spooler.errors import ErrorCode, JobError
from spooler.kinds import json_path, parse_job
from spooler.layout import EntryKind, classify_inbox_name, is_valid_job_id
from spooler.policy import (
    Candidate,
    compute_backoff,
    effective_max_attempts,
    effective_timeout,
    is_expired,
    order_candidates,
)
from spooler.progress import ProgressTracker, out_time_seconds, parse_progress_line
from spooler.status import (
    ALLOWED_TRANSITIONS,
    FINAL_STATES,
    InvalidTransition,
    State,
    WorkerRef,
    new_status,
    progress_update,
    transition,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kind", "job_id"),
    [
        ("abc.json", EntryKind.JOB, "abc"),
        ("A-1_b.cancel", EntryKind.CANCEL, "A-1_b"),
        ("x.delete", EntryKind.DELETE, "x"),
        (".abc.json", EntryKind.IGNORED, None),  # atomic writer's temp
        (".abc.json.Xy12Zq", EntryKind.IGNORED, None),  # rsync's temp
        ("abc.json.tmp", EntryKind.IGNORED, None),
        ("abc.json.part", EntryKind.IGNORED, None),
        ("abc.txt", EntryKind.STRAY, None),
        ("-rf.json", EntryKind.STRAY, None),
        ("a b.json", EntryKind.STRAY, None),
        ("a.b.json", EntryKind.STRAY, None),
        ("..json", EntryKind.IGNORED, None),
        ("x" * 129 + ".json", EntryKind.STRAY, None),
        ("README", EntryKind.STRAY, None),
        ("caf\u00e9.json", EntryKind.STRAY, None),
    ],
)
def test_inbox_names(name: str, kind: EntryKind, job_id: str | None) -> None:
    entry = classify_inbox_name(name)
    assert (entry.kind, entry.job_id) == (kind, job_id)


def test_job_id_rule() -> None:
    assert is_valid_job_id("a" * 128)
    assert not is_valid_job_id("a" * 129)
    for bad in ("", "_a", "a/b", "..", "a\nb", "a.b", "é"):
        assert not is_valid_job_id(bad), bad


# -- parsing job files -------------------------------------------------------------------------
def _parse_error(raw: bytes) -> JobError:
    with pytest.raises(JobError) as info:
        parse_job(raw)
    return info.value


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b"", ErrorCode.INVALID_JSON, "Expecting value"),
        (b"\xff\xfe{}", ErrorCode.NOT_UTF8, "not UTF-8"),
        (b'{"kind": "testpattern", "kind": "x"}', ErrorCode.INVALID_JSON, "duplicate key 'kind'"),
        (b'{"kind": "testpattern", "durationSeconds": NaN}', ErrorCode.INVALID_JSON, "NaN"),
        (
            b'{"kind": "testpattern", "durationSeconds": Infinity}',
            ErrorCode.INVALID_JSON,
            "Infinity",
        ),
        (  # out of a double's range: never inf, not even in free-form metadata (issue 11)
            b'{"kind": "testpattern", "durationSeconds": 1e999}',
            ErrorCode.INVALID_JSON,
            "the number 1e999 is too large",
        ),
        (b"[" * 100_000 + b"]" * 100_000, ErrorCode.INVALID_JSON, "deeply"),
        (b"[1, 2]", ErrorCode.INVALID_JOB, "must be a JSON object"),
        (b'{"kind": "nope"}', ErrorCode.INVALID_JOB, "'nope' is not one of"),
        (b'{"kind": "testpattern", "schemaVersion": 2}', ErrorCode.UNSUPPORTED_SCHEMA_VERSION, "2"),
    ],
)
def test_bad_job_files(raw: bytes, code: ErrorCode, fragment: str) -> None:
    error = _parse_error(raw)
    assert error.code is code
    assert fragment in error.message


def test_validation_error_names_the_json_path() -> None:
    error = _parse_error(b'{"kind": "testpattern", "width": 7, "metadata": [], "extra": 1}')
    paths = [e["path"] for e in error.details["errors"]]
    assert sorted(paths) == ["extra", "metadata", "width"]
    assert error.message.startswith(f"{paths[0]}: ") and "(and 2 more)" in error.message


def test_json_path_format() -> None:
    assert json_path(("segments", 7, "end")) == "segments[7].end"
    assert json_path(()) == "(root)"


def test_a_valid_job_parses() -> None:
    spec, kind = parse_job(b'{"kind": "testpattern", "priority": 3, "metadata": {"a": [1]}}')
    assert kind.name == "testpattern" and spec.priority == 3 and spec.metadata == {"a": [1]}


# -- state machine -----------------------------------------------------------------------------
WORKER = WorkerRef(id="w-1-aaaaaa", host="h", pid=1)


def _queued() -> object:
    return new_status("j", State.QUEUED, now=T0, submitted_at=T0, worker=WORKER, max_attempts=3)


@pytest.mark.parametrize("old", [*State, None])
@pytest.mark.parametrize("new", list(State))
def test_transition_table_is_enforced(old: State | None, new: State) -> None:
    allowed = (old, new) in ALLOWED_TRANSITIONS
    if old is None:
        if allowed:
            assert (
                new_status("j", new, now=T0, submitted_at=T0, worker=None, max_attempts=1).state
                is new
            )
        else:
            with pytest.raises(InvalidTransition):
                new_status("j", new, now=T0, submitted_at=T0, worker=None, max_attempts=1)
        return
    status = _queued()
    status = status.model_copy(update={"state": old})  # type: ignore[attr-defined]
    if allowed:
        assert transition(status, new, now=T0).state is new  # type: ignore[arg-type]
    else:
        with pytest.raises(InvalidTransition):
            transition(status, new, now=T0)  # type: ignore[arg-type]


def test_final_states_have_no_way_out() -> None:
    for old, _new in ALLOWED_TRANSITIONS:
        assert old not in FINAL_STATES


def test_transitions_stamp_times_and_history() -> None:
    status = _queued()
    later = T0 + timedelta(seconds=5)
    running = transition(status, State.RUNNING, now=later)  # type: ignore[arg-type]
    assert running.started_at == later and running.finished_at is None
    done = transition(running, State.SUCCEEDED, now=later + timedelta(seconds=1))
    assert done.progress == 1.0 and done.finished_at == later + timedelta(seconds=1)
    assert [h.state for h in done.history] == [State.QUEUED, State.RUNNING, State.SUCCEEDED]


def test_progress_never_goes_backwards() -> None:
    running = transition(_queued(), State.RUNNING, now=T0)  # type: ignore[arg-type]
    a = progress_update(running, now=T0, progress=0.5, eta_seconds=1, speed=1, step="x")
    b = progress_update(a, now=T0, progress=0.3, eta_seconds=1, speed=1, step="x")
    assert b.progress == 0.5
    with pytest.raises(InvalidTransition):
        progress_update(
            _queued(),
            now=T0,
            progress=0.1,
            eta_seconds=None,
            speed=None,  # type: ignore[arg-type]
            step=None,
        )


# -- policy ------------------------------------------------------------------------------------
LIMITS = LimitSettings(min_priority=-5, max_priority=5, aging_seconds_per_priority=60)


def test_priority_orders_then_submission_time() -> None:
    now = 1000.0
    jobs = [Candidate("low", 0, 990), Candidate("high", 3, 995), Candidate("old-low", 0, 980)]
    assert [c.job_id for c in order_candidates(jobs, now, LIMITS)] == ["high", "old-low", "low"]


def test_priority_is_capped_by_config() -> None:
    jobs = [Candidate("greedy", 1000, 100.0), Candidate("normal", 5, 100.0)]
    # Both capped at 5: the tie breaks on the id, not on the inflated number.
    assert [c.job_id for c in order_candidates(jobs, 100.0, LIMITS)] == ["greedy", "normal"]
    assert order_candidates(jobs[:1], 100.0, LIMITS)


@given(wait=st.floats(min_value=601, max_value=1e6))
def test_aging_lets_a_low_priority_job_overtake(wait: float) -> None:
    # A priority -5 job that waited over 10 minutes beats a fresh +5 job (10 steps of 60 s).
    now = 10_000_000.0
    jobs = [Candidate("fresh-high", 5, now), Candidate("starving", -5, now - wait)]
    assert order_candidates(jobs, now, LIMITS)[0].job_id == "starving"


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    retry = RetrySettings(backoff_base_seconds=2, backoff_max_seconds=30, jitter=0.25)
    rng = random.Random(1)
    for attempt, base in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (9, 30)]:
        for _ in range(50):
            delay = compute_backoff(attempt, retry, rng)
            assert base * 0.75 <= delay <= base * 1.25


def test_timeouts_and_attempts_are_capped_by_config() -> None:
    limits = LimitSettings(default_timeout_seconds=60, max_timeout_seconds=120)
    assert effective_timeout(None, limits) == 60
    assert effective_timeout(1e9, limits) == 120
    assert effective_max_attempts(None, RetrySettings(max_attempts=3)) == 3
    assert effective_max_attempts(10, RetrySettings(max_attempts=3)) == 3
    assert effective_max_attempts(1, RetrySettings(max_attempts=3)) == 1


def test_retention_by_final_state_and_never_for_active_jobs() -> None:
    retention = RetentionSettings(succeeded_days=1, failed_days=0, cancelled_days=2)
    old = T0 - timedelta(days=3)
    assert is_expired(State.SUCCEEDED, old, T0, retention)
    assert not is_expired(State.SUCCEEDED, T0 - timedelta(hours=23), T0, retention)
    assert not is_expired(State.FAILED, old, T0, retention)  # 0 = keep forever
    assert is_expired(State.CANCELLED, old, T0, retention)
    assert not is_expired(State.RUNNING, old, T0, retention)
    assert not is_expired(State.QUEUED, old, T0, retention)


# -- progress ----------------------------------------------------------------------------------
def test_progress_lines() -> None:
    assert parse_progress_line("out_time_us=1500000\n") == ("out_time_us", "1500000")
    assert parse_progress_line("garbage") is None
    assert out_time_seconds("out_time_us", "1500000") == 1.5
    assert out_time_seconds("out_time_ms", "1500000") == 1.5  # microseconds despite the name
    assert out_time_seconds("out_time_us", "N/A") is None
    assert out_time_seconds("frame", "10") is None


def test_weighted_steps_and_eta() -> None:
    tracker = ProgressTracker()
    tracker.declare({"cut": 1, "encode": 3})
    tracker.started_at = 0.0
    assert tracker.update("cut", 1.0) == pytest.approx(0.25)
    assert tracker.update("encode", 0.5) == pytest.approx(0.625)
    assert tracker.update("encode", 0.2) == pytest.approx(0.625)  # monotonic
    assert tracker.eta(10.0) == pytest.approx(10.0 * 0.375 / 0.625)
    with pytest.raises(ValueError):
        tracker.declare({"x": 0})
