"""The registry of job kinds and the parser that turns job-file bytes into a typed spec."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from spooler import jsonnumbers
from spooler.errors import ErrorCode, JobError
from spooler.export.kind import ExportKind
from spooler.kinds.base import JobKind, JobSpec
from spooler.kinds.testpattern import TestPatternKind

# A job file without "kind" is an export: that is what the web app writes.
DEFAULT_KIND = "export"

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (TestPatternKind(), ExportKind())}


def register(kind: JobKind) -> None:
    KINDS[kind.name] = kind


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_path(loc: tuple[int | str, ...]) -> str:
    """('segments', 7, 'end') -> 'segments[7].end'"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def decode_job_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobError(
            ErrorCode.NOT_UTF8, f"job file is not UTF-8 (byte {exc.start})", {"offset": exc.start}
        ) from exc
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_int=jsonnumbers.parse_int,  # no 5000-digit integers, no Python internals
            parse_float=jsonnumbers.parse_float,  # no 1e999 turned into inf
        )
    except _DuplicateKey as exc:
        raise JobError(
            ErrorCode.INVALID_JSON, f"duplicate key {exc.args[0]!r}", {"key": exc.args[0]}
        ) from exc
    except json.JSONDecodeError as exc:
        raise JobError(
            ErrorCode.INVALID_JSON,
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            {"line": exc.lineno, "column": exc.colno},
        ) from exc
    except ValueError as exc:
        raise JobError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise JobError(ErrorCode.INVALID_JSON, "JSON nested too deeply") from exc


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"path": json_path(err["loc"]), "code": err["type"], "message": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


def parse_job(raw: bytes) -> tuple[JobSpec, JobKind]:
    """Bytes of a job file -> (validated spec, its kind); JobError names every problem."""
    data = decode_job_json(raw)
    if not isinstance(data, dict):
        raise JobError(
            ErrorCode.INVALID_JOB,
            "(root): a job must be a JSON object",
            {
                "errors": [
                    {
                        "path": "(root)",
                        "code": "object_type",
                        "message": "a job must be a JSON object",
                    }
                ]
            },
        )
    version = data.get("schemaVersion", 1)
    # Not True (== 1 in Python); 1.0 is the integer 1 in JSON Schema, as for every int field.
    if type(version) not in (int, float) or version != 1:
        raise JobError(
            ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
            f"schemaVersion: {version!r} is not supported (this daemon reads version 1)",
            {"supported": [1]},
        )
    kind_name = data.get("kind", DEFAULT_KIND)
    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        message = f"kind: {kind_name!r} is not one of {sorted(KINDS)}"
        raise JobError(
            ErrorCode.INVALID_JOB,
            message,
            {"errors": [{"path": "kind", "code": "unknown_kind", "message": message}]},
        )
    try:
        spec = kind.spec_model.model_validate({**data, "kind": kind_name})
    except ValidationError as exc:
        errors = validation_details(exc)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise JobError(
            ErrorCode.INVALID_JOB, f"{first['path']}: {first['message']}{more}", {"errors": errors}
        ) from exc
    except RecursionError as exc:
        raise JobError(ErrorCode.INVALID_JOB, "job nested too deeply") from exc
    return spec, kind
