"""The registry of job kinds and the parser that turns job-file bytes into a typed spec."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from spooler import jsonnumbers
from spooler.errors import ErrorCode, JobError
from spooler.export.kind import ExportKind
from spooler.ingest.proxy import ProxyKind
from spooler.ingest.sync import SyncKind
from spooler.jobkind import JobKind, JobSpec
from spooler.kinds.testpattern import TestPatternKind

# A job file without "kind" is an export: that is what the web app writes.
DEFAULT_KIND = "export"

KINDS: dict[str, JobKind] = {
    kind.name: kind for kind in (TestPatternKind(), ExportKind(), ProxyKind(), SyncKind())
}


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


# Deeper than any job the schema describes (an export nests about 6 levels), far below
# what would exhaust a parser or serializer.
MAX_JSON_DEPTH = 64


def _tree_problem(data: Any) -> tuple[str, str, str] | None:
    """(path, code, message) of the first value a status file could not carry, in one
    linear walk: a string that is not encodable (a lone UTF-16 surrogate such as "\\ud800",
    from a JavaScript string sliced through an emoji), or nesting beyond MAX_JSON_DEPTH."""
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if len(loc) > MAX_JSON_DEPTH:
            return json_path(loc), "depth", f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(value, str):
            items: list[tuple[int | str, Any]] = []
            strings = [value]
        elif isinstance(value, dict):
            items = list(value.items())
            strings = list(value)
        elif isinstance(value, list):
            items = list(enumerate(value))
            strings = []
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                code_point = ord(text[exc.start])
                return (
                    json_path(loc),
                    "unpaired_surrogate",
                    f"holds an unpaired UTF-16 surrogate (U+{code_point:04X}): "
                    "not a Unicode character",
                )
        stack.extend(((*loc, key), child) for key, child in reversed(items))
    return None


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


def check_job_tree(data: Any) -> None:
    """Refuse, with its path, a value no status or log could record (see _tree_problem)."""
    problem = _tree_problem(data)
    if problem is not None:
        path, code, message = problem
        raise JobError(
            ErrorCode.INVALID_JOB,
            f"{path}: {message}",
            {"errors": [{"path": path, "code": code, "message": message}]},
        )


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"path": json_path(err["loc"]), "code": err["type"], "message": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


def parse_job(raw: bytes) -> tuple[JobSpec, JobKind]:
    """Bytes of a job file -> (validated spec, its kind); JobError names every problem."""
    data = decode_job_json(raw)
    check_job_tree(data)
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
