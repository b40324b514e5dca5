"""The status file's model and its state machine, as pure functions from status to status.

Every change of state goes through `transition`, which refuses moves the protocol does not
allow (docs/protocol.md draws the graph), so no code path can, say, revive a finished job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from spooler.errors import ErrorCode

STATUS_SCHEMA_VERSION = 1


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


FINAL_STATES: frozenset[State] = frozenset(
    {State.SUCCEEDED, State.FAILED, State.CANCELLED, State.REJECTED}
)

# (from, to). `None` is "no status yet": the claim writes the first status.
ALLOWED_TRANSITIONS: frozenset[tuple[State | None, State]] = frozenset(
    {
        (None, State.QUEUED),
        (None, State.REJECTED),
        (None, State.CANCELLED),
        (State.QUEUED, State.RUNNING),
        (State.QUEUED, State.CANCELLED),
        (State.QUEUED, State.FAILED),  # attempts exhausted during recovery
        (State.QUEUED, State.QUEUED),  # taken over by another worker
        (State.RUNNING, State.RUNNING),  # progress
        (State.RUNNING, State.SUCCEEDED),
        (State.RUNNING, State.FAILED),
        (State.RUNNING, State.CANCELLED),
        (State.RUNNING, State.QUEUED),  # retry, crash recovery, or daemon shutdown
    }
)


# The step label of a finished job (a UI shows it instead of the last step it ran).
DONE_STEP = "done"


class InvalidTransition(ValueError):
    pass


def _plain_name(value: str) -> str:
    """A name inside the job's own folder: a status file is untrusted input (a client can
    edit it), so a path in it must never lead out of that folder."""
    if (
        not value
        or value in (".", "..")
        or "/" in value
        or "\x00" in value
        or len(value.encode("utf-8", "surrogatepass")) > 255
    ):
        raise ValueError(f"{value!r} is not a plain file name")
    return value


PlainName = Annotated[str, AfterValidator(_plain_name)]


class _CamelModel(BaseModel):
    # Readers ignore fields they do not know, so newer daemons can add some (protocol.md).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class WorkerRef(_CamelModel):
    id: str
    host: str
    pid: int


class ErrorInfo(_CamelModel):
    code: ErrorCode
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class Warning_(_CamelModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class OutputInfo(_CamelModel):
    path: PlainName = Field(description="A file name in the job's folder.")
    role: str = Field("main", description="main, poster, storyboard, rendition, ...")
    size_bytes: int
    duration_seconds: float | None = None
    width: int | None = Field(None, description="As displayed: a 90/270° rotation swaps it.")
    height: int | None = Field(None, description="As displayed: a 90/270° rotation swaps it.")
    mime_type: str | None = None


class PendingPublish(_CamelModel):
    """Journal of the one rename in flight: recovery rolls it forward."""

    temp: PlainName = Field(description="Temporary name in the job's folder (already verified).")
    path: PlainName = Field(description="Final name it is being renamed to.")


class HistoryEntry(_CamelModel):
    state: State
    at: datetime
    attempt: int
    worker_id: str | None = None
    reason: str | None = None


class JobStatus(_CamelModel):
    """The content of jobs/<id>/status.json; always complete, replaced atomically."""

    schema_version: int = STATUS_SCHEMA_VERSION
    job_id: str
    kind: str | None = None
    state: State
    progress: float = Field(0.0, ge=0.0, le=1.0)
    eta_seconds: float | None = None
    speed: float | None = Field(None, description="Media seconds processed per wall second.")
    step: str | None = Field(None, description=f"What runs now; {DONE_STEP!r} once succeeded.")
    cancel_requested: bool = Field(
        False,
        description="The daemon has seen a cancel (or delete) request: true from then on, "
        "while ffmpeg is being stopped and in the final status.",
    )
    jobs_ahead: int | None = Field(
        None,
        ge=0,
        description="While queued: about how many jobs this daemon starts before this one "
        "(approximate: other daemons share the inbox).",
    )
    attempt: int = Field(1, ge=1)
    max_attempts: int = Field(1, ge=1)
    priority: int = 0
    worker: WorkerRef | None = None
    submitted_at: datetime
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    updated_at: datetime
    finished_at: datetime | None = None
    retry_at: datetime | None = None
    error: ErrorInfo | None = None
    warnings: list[Warning_] = Field(default_factory=list)
    outputs: list[OutputInfo] = Field(default_factory=list)
    planned_outputs: list[PlainName] = Field(
        default_factory=list,
        description="Names this attempt will publish; once all are published, a worker lost "
        "before writing 'succeeded' is finished by recovery instead of being run again.",
    )
    pending_publish: PendingPublish | None = None
    preflight: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, the one timestamp format of every spool file."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check_transition(old: State | None, new: State) -> None:
    if (old, new) not in ALLOWED_TRANSITIONS:
        raise InvalidTransition(f"{old} -> {new} is not an allowed transition")


def new_status(
    job_id: str,
    state: State,
    *,
    now: datetime,
    submitted_at: datetime,
    worker: WorkerRef | None,
    max_attempts: int,
    kind: str | None = None,
    priority: int = 0,
    metadata: dict[str, Any] | None = None,
    error: ErrorInfo | None = None,
) -> JobStatus:
    """The first status of a job, written by its claim."""
    check_transition(None, state)
    final = state in FINAL_STATES
    return JobStatus(
        job_id=job_id,
        kind=kind,
        state=state,
        attempt=1,
        max_attempts=max_attempts,
        priority=priority,
        worker=worker,
        submitted_at=submitted_at,
        claimed_at=now,
        updated_at=now,
        finished_at=now if final else None,
        error=error,
        metadata=metadata or {},
        history=[
            HistoryEntry(
                state=state,
                at=now,
                attempt=1,
                worker_id=worker.id if worker else None,
                reason=error.code if error else None,
            )
        ],
    )


def transition(
    status: JobStatus,
    new_state: State,
    *,
    now: datetime,
    reason: str | None = None,
    **changes: Any,
) -> JobStatus:
    """Return `status` moved to `new_state` with `changes` applied; refuses illegal moves."""
    check_transition(status.state, new_state)
    update: dict[str, Any] = {"state": new_state, "updated_at": now, **changes}
    if new_state in FINAL_STATES:
        update["finished_at"] = now
        update["eta_seconds"] = None
        update["retry_at"] = None
        if new_state is State.SUCCEEDED:
            update["progress"] = 1.0
            update["step"] = DONE_STEP
        if new_state is State.CANCELLED:
            update["cancel_requested"] = True
    if new_state is State.RUNNING and status.state is not State.RUNNING:
        update.setdefault("started_at", now)
        update["retry_at"] = None
    if status.state is State.RUNNING and new_state not in (State.RUNNING, State.SUCCEEDED):
        # An attempt that did not succeed leaves no outputs behind (its files are withdrawn).
        update.update(outputs=[], planned_outputs=[], pending_publish=None)
    history = list(status.history)
    if new_state is not status.state or reason is not None:
        worker = changes.get("worker", status.worker)
        history.append(
            HistoryEntry(
                state=new_state,
                at=now,
                attempt=changes.get("attempt", status.attempt),
                worker_id=worker.id if worker else None,
                reason=reason,
            )
        )
    update["history"] = history
    return status.model_copy(update=update)


# What a running attempt may change besides its state (everything else goes through
# `transition`, which records the change in the history).
ANNOTATIONS: frozenset[str] = frozenset(
    {"planned_outputs", "outputs", "pending_publish", "warnings", "preflight", "cancel_requested"}
)


def annotate(status: JobStatus, *, now: datetime, **changes: Any) -> JobStatus:
    """A running job's plan, outputs, publish journal, warnings or preflight; refuses any
    other field (a state change is a `transition`)."""
    if status.state is not State.RUNNING:
        raise InvalidTransition(f"annotating a {status.state} job")
    unknown = set(changes) - ANNOTATIONS
    if unknown:
        raise InvalidTransition(f"{sorted(unknown)} cannot change without a transition")
    return status.model_copy(update={**changes, "updated_at": now})


def progress_update(
    status: JobStatus,
    *,
    now: datetime,
    progress: float,
    eta_seconds: float | None,
    speed: float | None,
    step: str | None,
) -> JobStatus:
    """A running job's progress; never moves backwards."""
    if status.state is not State.RUNNING:
        raise InvalidTransition(f"progress of a {status.state} job")
    return status.model_copy(
        update={
            "progress": max(status.progress, min(1.0, max(0.0, progress))),
            "eta_seconds": eta_seconds,
            "speed": speed,
            "step": step,
            "updated_at": now,
        }
    )
