"""The BullMQ intake's pure rules (spooler/intake/bullmq_rules.py): priority mapping, key
names, failure reasons, and what a final status means for the queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from spooler.errors import ErrorCode
from spooler.intake.bullmq_rules import (
    BULLMQ_PRIORITY_MAX,
    QueueKeys,
    Verdict,
    bullmq_priority,
    failure_reason,
    outcome_of,
    progress_payload,
)
from spooler.status import (
    ErrorInfo,
    JobStatus,
    OutputInfo,
    State,
    annotate,
    new_status,
    transition,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _running() -> JobStatus:
    queued = new_status("j1", State.QUEUED, now=NOW, submitted_at=NOW, worker=None, max_attempts=1)
    return transition(queued, State.RUNNING, now=NOW)


def test_priority_higher_first_maps_to_bullmq_lower_first_never_zero() -> None:
    assert bullmq_priority(1000) == 1
    assert bullmq_priority(0) == 1001
    assert bullmq_priority(-1000) == 2001
    assert bullmq_priority(5) < bullmq_priority(4)  # higher spool priority runs first
    assert bullmq_priority(10**6) == 1 and bullmq_priority(-(10**6)) == 2001  # clamped
    assert all(1 <= bullmq_priority(p) <= BULLMQ_PRIORITY_MAX for p in range(-1000, 1001))


def test_the_web_module_uses_the_same_mapping() -> None:
    from pathlib import Path

    source = (Path(__file__).parent.parent / "web" / "src" / "bullmq.ts").read_text()
    assert "return 1001 - clamped;" in source and "Math.min(1000," in source


def test_keys_stay_outside_bullmqs_own_shapes() -> None:
    keys = QueueKeys("bull", "exports")
    assert keys.lock("a") == "bull:exports:a:lock"
    assert keys.cancel("a") == "bull:exports:spooler:cancel:a"
    assert keys.cancel_channel == "bull:exports:spooler:cancel"


def test_failure_reason_is_documented_json() -> None:
    reason = json.loads(failure_reason(ErrorCode.TIMEOUT, "too long", {"limit": 3}))
    assert reason == {"code": "timeout", "message": "too long", "details": {"limit": 3}}


@pytest.mark.parametrize(
    ("state", "code", "verdict"),
    [
        (State.FAILED, ErrorCode.FFMPEG_FAILED, Verdict.RETRY),  # transient: BullMQ's attempts
        (State.FAILED, ErrorCode.INTERNAL, Verdict.RETRY),
        (State.FAILED, ErrorCode.TIMEOUT, Verdict.FAIL),  # permanent: never retried
        (State.FAILED, ErrorCode.SOURCE_MISSING, Verdict.FAIL),
        (State.CANCELLED, ErrorCode.CANCELLED, Verdict.FAIL),
    ],
)
def test_outcome_of_a_failed_attempt(state: State, code: ErrorCode, verdict: Verdict) -> None:
    final = transition(
        _running(),
        state,
        now=NOW,
        reason=code.value,
        error=ErrorInfo(code=code, message="m", details={"x": 1}),
    )
    outcome = outcome_of(final, "w1")
    assert outcome.verdict is verdict
    assert outcome.reason is not None and json.loads(outcome.reason)["code"] == code.value


def test_outcome_of_success_requeue_and_loss() -> None:
    running = _running()
    with_output = annotate(
        running,
        now=NOW,
        outputs=[OutputInfo(path="a.mp4", size_bytes=10)],
    )
    done = transition(with_output, State.SUCCEEDED, now=NOW)
    outcome = outcome_of(done, "w1")
    assert outcome.verdict is Verdict.COMPLETE
    assert outcome.result is not None
    assert outcome.result["outputs"][0]["path"] == "a.mp4"
    assert outcome.result["outputs"][0]["sizeBytes"] == 10
    requeued = transition(running, State.QUEUED, now=NOW, reason="daemon_stopping")
    assert outcome_of(requeued, "w1").verdict is Verdict.REQUEUE
    assert outcome_of(None, "w1").verdict is Verdict.DROP


def test_progress_payload_carries_the_status_fields() -> None:
    payload = progress_payload(_running())
    assert set(payload) == {
        "state", "progress", "step", "etaSeconds", "speed", "attempt", "cancelRequested",
    }  # fmt: skip


def test_a_delayed_job_is_due_once_its_time_has_come() -> None:
    from spooler.intake.bullmq_rules import delayed_score

    due_at_ms = 1_796_029_599_361
    score = due_at_ms * 4096 + 7  # how BullMQ scores a delayed job (7: its counter)
    assert score <= delayed_score(due_at_ms)
    assert score > delayed_score(due_at_ms - 1)
