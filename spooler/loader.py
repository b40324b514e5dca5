"""The one job loader: a job file (or its bytes) -> a validated job within the operator's
limits, or a JobError whose code, message and details go into the status unchanged.

Every place that reads a job uses it: the claim, the adoption after a crash, `spooler
validate`, and any other intake. So a job over a configured limit is refused at once, with
the JSON path of what is over it, instead of failing after a claim and a slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.fsutil import FileTooLarge, UnsafeFile, read_untrusted
from spooler.jobkind import JobKind, JobSpec
from spooler.kinds import parse_job
from spooler.webhooks.policy import callback_problem


@dataclass(frozen=True)
class LoadedJob:
    spec: JobSpec
    kind: JobKind


def load_job(raw: bytes, settings: Settings) -> LoadedJob:
    """Decode strictly, validate against the kind's model, then check the kind's limits."""
    spec, kind = parse_job(raw)
    errors = [*kind.limit_errors(spec, settings), *_callback_errors(spec, settings)]
    if errors:
        raise invalid_job(errors)
    return LoadedJob(spec, kind)


def _callback_errors(spec: JobSpec, settings: Settings) -> list[dict[str, Any]]:
    """A per-job webhook must name a host the operator allowed (docs/webhooks.md §2)."""
    if spec.callback is None:
        return []
    problem = callback_problem(spec.callback.url, list(settings.webhooks.allowed_hosts))
    if problem is None:
        return []
    return [{"path": "callback.url", "code": "callback_not_allowed", "message": problem}]


def read_job(path: Path, settings: Settings) -> LoadedJob:
    """Read a job file as untrusted input (no symlink, no FIFO, capped), then load it."""
    limit = settings.limits.max_job_file_bytes
    try:
        raw = read_untrusted(path, limit)
    except UnsafeFile as exc:
        raise JobError(ErrorCode.NOT_A_FILE, f"job file {exc}") from exc
    except FileTooLarge as exc:
        raise JobError(
            ErrorCode.TOO_LARGE, f"job file is {exc}", {"size": exc.size, "limit": exc.limit}
        ) from exc
    except OSError as exc:
        raise JobError(ErrorCode.NOT_A_FILE, f"job file cannot be read: {exc}") from exc
    return load_job(raw, settings)


def invalid_job(errors: list[dict[str, Any]]) -> JobError:
    """`invalid_job` naming the first problem, with every one in details.errors."""
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JobError(
        ErrorCode.INVALID_JOB, f"{first['path']}: {first['message']}{more}", {"errors": errors}
    )
