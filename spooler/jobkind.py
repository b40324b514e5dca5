"""What a kind of job is: a pydantic spec plus a `run` that drives ffmpeg through a context.

The daemon owns claiming, status, retries, cancel and publishing; a kind only plans and runs
its ffmpeg steps through `JobContext`, so new kinds (export, proxy, thumbnail, ...) plug in
without touching the spool protocol.

This contract sits outside the `spooler.kinds` package (the registry) so that a kind's
package imports it without loading the registry, which imports every kind: the dependency
runs one way, registry -> kinds -> this module. It loads no ffmpeg or PyAV module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from spooler.config import DEFAULT_WEBHOOK_EVENTS, Settings, WebhookEventName
from spooler.jsonnumbers import integral_ints
from spooler.status import OutputInfo

if TYPE_CHECKING:  # the runner's result type; the module that runs ffmpeg stays unloaded
    from spooler.ffmpeg import FfmpegResult
    from spooler.s3.remotes import RemoteSources

# metadata is echoed into every status write and every webhook: kept small and shallow.
METADATA_MAX_DEPTH = 8
METADATA_MAX_BYTES = 16 * 1024


def _depth(value: Any) -> int:
    """Levels of containers in a decoded JSON value ({} is 1, a scalar 0); iterative."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level) for child in children)
    return deepest


class SpecModel(BaseModel):
    """Base of every model read from a job file: camelCase JSON, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        allow_inf_nan=False,
        # The published schema's types, no coercion: "5" is not a number, "yes" not a
        # boolean, true not an integer (ints keep 320.0: see spooler/jsonnumbers.py).
        strict=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _integral_ints(cls, data: Any) -> Any:
        return integral_ints(cls, data)


class Callback(SpecModel):
    """Where this job's events are posted, signed with the operator's secret (docs/webhooks.md).
    The host must be in the daemon's `webhooks.allowed_hosts`."""

    url: str = Field(max_length=2048, pattern=r"^https?://[^\s]+$")
    events: list[WebhookEventName] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1
    )


class JobSpec(SpecModel):
    """Fields common to every kind of job. `kind` selects the subclass."""

    schema_version: int = Field(1, ge=1, le=1, description="Version of the job file format.")
    kind: str
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first; capped by config.")
    timeout_seconds: float | None = Field(
        None, gt=0, description="Wall-clock limit; capped by config."
    )
    max_attempts: int | None = Field(None, ge=1, le=20, description="Capped by config.")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Free-form; echoed into the status file. At most {METADATA_MAX_DEPTH} "
        f"levels deep and {METADATA_MAX_BYTES} bytes as compact UTF-8 JSON.",
    )
    callback: Callback | None = Field(
        None, description="Per-job webhook; daemons without the `callback` capability reject it."
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_fits(cls, value: dict[str, Any]) -> dict[str, Any]:
        depth = _depth(value)
        if depth > METADATA_MAX_DEPTH:
            raise PydanticCustomError(
                "metadata_limit",
                "metadata is {depth} levels deep, over the limit of {limit}",
                {"depth": depth, "limit": METADATA_MAX_DEPTH},
            )
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > METADATA_MAX_BYTES:
            raise PydanticCustomError(
                "metadata_limit",
                "metadata is {size} bytes, over the limit of {limit}",
                {"size": size, "limit": METADATA_MAX_BYTES},
            )
        return value


@dataclass
class Step:
    """One unit of a plan; `weight` is its share of the job's progress bar."""

    name: str
    weight: float = 1.0


class JobContext(Protocol):
    """What the daemon gives a running job."""

    job_id: str
    job_dir: Path
    settings: Settings
    ffmpeg: str
    # The daemon's door to remote sources (docs/s3.md): allow-lists, the loopback gateway.
    remote_sources: RemoteSources

    def declare_steps(self, steps: list[Step]) -> None:
        """Announce the plan so progress is weighted across steps."""

    def declare_outputs(self, names: list[str]) -> None:
        """Announce every output name before publishing any, so that a crash after the last
        publish is finished by recovery rather than run again."""

    def run_ffmpeg(
        self,
        args: list[str],
        *,
        step: str,
        expected_seconds: float,
        pass_fds: tuple[int, ...] = (),
    ) -> FfmpegResult:
        """Run ffmpeg (args exclude the binary and the global flags the daemon adds).

        `pass_fds`: descriptors ffmpeg inherits (at the same numbers), so that it can open
        the sources the kind validated as /proc/self/fd/N.

        Raises JobCancelled, or JobError with timeout / stalled / ffmpeg_failed /
        ffmpeg_killed / disk_full.
        """
        ...

    def report_progress(self, step: str, fraction: float) -> None:
        """Progress of in-process work (not ffmpeg, whose progress is read for you)."""

    def temp_path(self, name: str) -> Path:
        """A hidden path in the job folder, removed if the job does not succeed."""
        ...

    def encoded(self) -> None:
        """Every ffmpeg of this attempt has ended: what is left (checking and publishing the
        outputs) no longer holds one of the `max_jobs` slots, so the next job's ffmpeg starts
        beside it. Optional: a kind that never says so holds its slot to its end. No
        `run_ffmpeg` may follow."""

    def publish(self, temp: Path, name: str, info: OutputInfo) -> None:
        """Rename a verified temporary file to its final name and list it in the status."""

    def warn(self, code: str, message: str, **details: Any) -> None: ...

    def set_preflight(self, report: dict[str, Any]) -> None: ...

    def log_line(self, text: str) -> None:
        """Append a line to the job's log (jobs/<id>/job.log)."""

    def check_cancelled(self) -> None:
        """Raise JobCancelled if a cancel marker appeared."""


class JobKind(Protocol):
    name: ClassVar[str]
    spec_model: ClassVar[type[JobSpec]]

    def limit_errors(self, spec: Any, settings: Settings) -> list[dict[str, Any]]:
        """The operator's bounds this job exceeds, as {path, code: "limit", message}; checked
        by the loader before the job is accepted (the model cannot see settings)."""
        ...

    def run(self, spec: Any, ctx: JobContext) -> None:
        """Do the work; publish outputs through ctx; raise JobError on failure."""
