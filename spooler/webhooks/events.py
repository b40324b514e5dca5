"""Job events and their payload, derived from status files alone (pure).

The final status is the durable record of its event: an event's sequence number is the
index of its entry in the status `history` (1-based) and its webhook id is a hash of the
job's identity and that number, so recovery rebuilds exactly the event (same id, same
sequence) that a crashed daemon may or may not have sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from spooler.config import WebhookEventName
from spooler.status import (
    ErrorInfo,
    HistoryEntry,
    JobStatus,
    OutputInfo,
    State,
    Warning_,
    _CamelModel,
    iso,
)

EVENT_OF_STATE: dict[State, WebhookEventName] = {
    State.RUNNING: "started",
    State.SUCCEEDED: "succeeded",
    State.FAILED: "failed",
    State.CANCELLED: "cancelled",
    State.REJECTED: "rejected",
}

TEST_EVENT_TYPE = "spooler.test"


@dataclass(frozen=True)
class Event:
    name: WebhookEventName
    sequence: int  # 1-based index of the history entry that records it
    entry: HistoryEntry

    @property
    def is_final(self) -> bool:
        return self.name != "started"


def events_in(status: JobStatus) -> list[Event]:
    """Every event the status's history records, oldest first."""
    found: list[Event] = []
    previous: State | None = None
    for index, entry in enumerate(status.history):
        name = EVENT_OF_STATE.get(entry.state)
        # running -> running with a reason is a note in the history, not a new start.
        if name is not None and not (entry.state is State.RUNNING and previous is State.RUNNING):
            found.append(Event(name, index + 1, entry))
        previous = entry.state
    return found


def new_events(previous: JobStatus | None, current: JobStatus) -> list[Event]:
    """Events recorded by the write of `current` over `previous` (None: the first write)."""
    seen = len(previous.history) if previous is not None else 0
    if previous is not None and previous.claimed_at != current.claimed_at:
        seen = 0  # not the same job (an id reused after a delete)
    return [e for e in events_in(current) if e.sequence > seen]


def event_id(status: JobStatus, sequence: int) -> str:
    """The webhook-id: the same for an event however often it is rebuilt or retried."""
    claimed = iso(status.claimed_at) if status.claimed_at else ""
    key = f"{status.job_id}\n{iso(status.submitted_at)}\n{claimed}\n{sequence}".encode()
    digest = base64.b32encode(hashlib.sha256(key).digest()).decode().lower().rstrip("=")
    return f"evt_{digest[:26]}"


class _Payload(_CamelModel):
    # Every field is always sent: the schema (serialization mode) says so, for receivers' types.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class WebhookOutput(OutputInfo):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    uri: str | None = Field(None, description="Absolute URL, when the operator set one up.")


class EventData(_Payload):
    event: Literal["started", "succeeded", "failed", "cancelled", "rejected", "test"]
    sequence: int = Field(ge=0, description="Orders one job's events (greater is later).")
    job_id: str
    state: Literal["running", "succeeded", "failed", "cancelled", "rejected", "test"]
    kind: str | None = None
    attempt: int = Field(1, ge=1)
    max_attempts: int = Field(1, ge=1)
    error: ErrorInfo | None = None
    warnings: list[Warning_] = Field(default_factory=list)
    outputs: list[WebhookOutput] = Field(default_factory=list)
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class WebhookPayload(_Payload):
    """The body of every webhook request (Standard Webhooks: type, timestamp, data)."""

    type: Literal[
        "job.started", "job.succeeded", "job.failed", "job.cancelled", "job.rejected",
        "spooler.test",
    ]  # fmt: skip
    timestamp: datetime = Field(description="When the event happened (not when it was sent).")
    data: EventData


def payload_for(status: JobStatus, event: Event, output_base_url: str | None) -> WebhookPayload:
    final = event.is_final
    base = output_base_url.rstrip("/") if output_base_url else None
    outputs = [
        WebhookOutput(**o.model_dump(), uri=f"{base}/{status.job_id}/{o.path}" if base else None)
        for o in (status.outputs if final else [])
    ]
    data = EventData(
        event=event.name,
        sequence=event.sequence,
        job_id=status.job_id,
        state=event.entry.state.value,
        kind=status.kind,
        attempt=event.entry.attempt,
        max_attempts=status.max_attempts,
        error=status.error if final else None,
        warnings=status.warnings,
        outputs=outputs,
        submitted_at=status.submitted_at,
        started_at=status.started_at if final else event.entry.at,
        finished_at=status.finished_at if final else None,
        metadata=status.metadata,
    )
    return WebhookPayload(type=f"job.{event.name}", timestamp=event.entry.at, data=data)


def sample_payload(now: datetime) -> WebhookPayload:
    return WebhookPayload(
        type=TEST_EVENT_TYPE,
        timestamp=now,
        data=EventData(event="test", sequence=0, job_id="webhook-test", state="test"),
    )


def render_body(payload: WebhookPayload) -> str:
    """The exact bytes signed and sent (stored, so every retry sends the same)."""
    return json.dumps(
        payload.model_dump(mode="json", by_alias=True),
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
