"""The job loader agrees with the published JSON Schema (issue 11, item 8).

Both directions: every documented example passes both; every type-confused variant of
them (a number written as a string, a boolean for a number, 5.0 for 5, ...) gets the same
verdict from the loader (`parse_job`) as from a JSON Schema validator reading the
committed schema/job.schema.json.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from spooler.errors import ErrorCode, JobError
from spooler.kinds import parse_job

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schema" / "job.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_jobs() -> list[tuple[str, dict[str, Any]]]:
    """Every ```json block of the docs that is a whole job file (not a status, not a
    fragment): an object with "angles" (export) or a "kind"."""
    jobs = []
    for doc in DOCS:
        for n, block in enumerate(re.findall(r"```json\n(.*?)```", doc.read_text(), re.S)):
            try:
                data = json.loads(block)
            except json.JSONDecodeError:
                continue  # an excerpt with "..." in it
            if (
                isinstance(data, dict)
                and "state" not in data
                and "..." not in data  # an excerpt: {"kind": "export", "...": "...", ...}
                and ("angles" in data or "kind" in data)
            ):
                jobs.append((f"{doc.name}#{n}", data))
    return jobs


# Every other field, in one valid job (the docs show them in fragments).
FULL: dict[str, Any] = {
    "schemaVersion": 1,
    "kind": "export",
    "priority": 3,
    "timeoutSeconds": 600,
    "maxAttempts": 2,
    "metadata": {"projectId": "p-42"},
    "callback": {"url": "https://app.example.com/hook", "events": ["succeeded", "failed"]},
    "angles": [
        {"id": "cam1", "source": "day1/cam1.mp4", "syncOffset": 3},
        {"id": "cam2", "source": "day1/cam2.mp4", "syncOffset": 0.5},
    ],
    "switches": [
        {"at": 0, "angle": "cam1"},
        {"at": 10, "angle": "cam2", "transition": {"type": "crossfade", "duration": 1}},
    ],
    "end": 20,
    "range": {"start": 1, "end": 19.5},
    "audio": {
        "mode": "external",
        "source": "day1/mic.wav",
        "offset": 1.25,
        "gainDb": 3,
        "ambient": {"angle": "cam2", "gainDb": -18},
        "loudness": {"targetLufs": -16, "truePeak": -1.5, "loudnessRange": 11},
    },
    "transition": {"type": "fadeblack", "duration": 0.5},
    "watermark": {
        "text": "Draft",
        "position": "top-left",
        "margin": 0.03,
        "textSize": 0.05,
        "color": "#FFCC00",
        "opacity": 0.8,
        "start": 2,
        "end": 18,
    },
    "output": {
        "container": "mp4",
        "videoCodec": "h264",
        "videoBitrateKbps": 4000,
        "preset": "fast",
        "size": {"mode": "exact", "width": 1280, "height": 720, "fit": "crop"},
        "fps": 29.97,
        "audioCodec": "aac",
        "audioBitrateKbps": 160,
        "faststart": False,
        "fileName": "Final cut",
    },
    "mode": "auto",
    "renditions": [
        {"name": "small", "crf": 28, "size": {"mode": "height", "height": 360}},
        {"name": "web", "container": "webm", "videoCodec": "vp9", "preset": "4"},
        {"name": "audio", "audioOnly": True, "audioBitrateKbps": 96},
    ],
    "poster": {"at": 5.5, "format": "webp", "width": 640},
    "storyboard": {"interval": 2, "columns": 8, "width": 160},
}
JOBS = [*documented_jobs(), ("FULL", FULL)]


def loader_accepts(job: Any) -> bool:
    try:
        parse_job(json.dumps(job).encode())
    except JobError:
        return False
    return True


def test_the_docs_hold_job_examples() -> None:
    assert len(JOBS) >= 4, [
        name for name, _ in JOBS
    ]  # README, export.md, protocol.md, FULL  # the extraction itself can fail


@pytest.mark.parametrize(("name", "job"), JOBS, ids=[name for name, _ in JOBS])
def test_every_documented_job_passes_the_loader_and_the_schema(
    name: str, job: dict[str, Any]
) -> None:
    assert not list(VALIDATOR.iter_errors(job)), name
    parse_job(json.dumps(job).encode())


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "metadata":  # free-form: anything goes on both sides
                yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path, node


def _confusions(value: Any) -> list[Any]:
    """Values of another JSON type that a lax loader would coerce to `value`'s meaning."""
    if isinstance(value, bool):
        return [str(value).lower(), "yes", int(value)]
    if isinstance(value, int):
        return [str(value), float(value), value + 0.5, value == 1]
    if isinstance(value, float):
        return [str(value), int(value) if value.is_integer() else value, True]
    if isinstance(value, str):
        return [5, True, [value]]
    return []  # (null is not a confusion: it means "not given", which cross-field rules see)


def _replaced(job: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(job)
    target: Any = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def mutants() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, job in JOBS:
        for path, value in _leaves(job):
            for other in _confusions(value):
                label = f"{name}:{'.'.join(map(str, path))}={json.dumps(other)}"
                out.append((label, _replaced(job, path, other)))
    return out


def test_the_loader_and_the_schema_agree_on_every_type_confusion() -> None:
    # Given every documented job with one value replaced by another JSON type
    cases = mutants()
    assert len(cases) > 300
    # Then the loader accepts exactly what the schema accepts (the loader's own cross-field
    # rules cannot differ here: a confused value either means the same or is refused)
    disagree = [
        (label, schema_ok)
        for label, job in cases
        if (schema_ok := VALIDATOR.is_valid(job)) != loader_accepts(job)
    ]
    assert disagree == []
    # And what the old (lax) loader coerced is refused, while 160.0 for 160 is still fine
    loader = {label: loader_accepts(job) for label, job in cases}
    assert loader['FULL:angles.0.syncOffset="3"'] is False
    assert loader['FULL:output.faststart="false"'] is False
    assert loader["FULL:output.faststart=0"] is False
    assert loader["FULL:schemaVersion=true"] is False
    assert loader["FULL:priority=false"] is False
    assert loader["FULL:output.audioBitrateKbps=160.0"] is True
    assert loader["FULL:output.audioBitrateKbps=160.5"] is False


@pytest.mark.parametrize(
    ("text", "path", "code"),
    [
        (b'{"kind": "testpattern", "durationSeconds": "5"}', "durationSeconds", "float_type"),
        (b'{"kind": "testpattern", "width": "320"}', "width", "int_type"),
        (b'{"kind": "testpattern", "realtime": "yes"}', "realtime", "bool_type"),
        (b'{"kind": "testpattern", "realtime": 1}', "realtime", "bool_type"),
        (b'{"kind": "testpattern", "priority": true}', "priority", "int_type"),
        (b'{"kind": "testpattern", "fps": 25.5}', "fps", "int_type"),
        (
            b'{"kind": "testpattern", "durationSeconds": 1e-300}',
            "durationSeconds",
            "greater_than_equal",
        ),
        (
            b'{"kind": "testpattern", "durationSeconds": 0.09}',
            "durationSeconds",
            "greater_than_equal",
        ),
        (
            b'{"angles": [{"id": "a", "source": "a.mp4"}], "segments": '
            b'[{"angle": "a", "start": 0, "end": "2"}]}',
            "segments[0].end",
            "float_type",
        ),
        (
            b'{"angles": [{"id": "a", "source": "a.mp4"}], "segments": '
            b'[{"angle": "a", "start": 0, "end": 2}], "output": {"faststart": "false"}}',
            "output.faststart",
            "bool_type",
        ),
    ],
)
def test_what_the_schema_refuses_is_invalid_job_with_its_path(
    text: bytes, path: str, code: str
) -> None:
    assert not VALIDATOR.is_valid(json.loads(text))
    with pytest.raises(JobError) as caught:
        parse_job(text)
    assert caught.value.code is ErrorCode.INVALID_JOB
    (error,) = caught.value.details["errors"]
    assert (error["path"], error["code"]) == (path, code)


def test_integral_numbers_are_integers_as_in_json_schema() -> None:
    job = {
        "kind": "testpattern",
        "width": 320.0,
        "fps": 30.0,
        "priority": -2.0,
        "schemaVersion": 1.0,
    }
    assert VALIDATOR.is_valid(job)
    spec, _ = parse_job(json.dumps(job).encode())
    assert spec.model_dump(include={"width", "fps", "priority", "schema_version"}) == {
        "width": 320,
        "fps": 30,
        "priority": -2,
        "schema_version": 1,
    }
    assert type(spec.width) is int  # type: ignore[attr-defined]


@pytest.mark.parametrize("digits", [101, 4301, 5000, 100_000])
def test_a_huge_integer_gets_a_plain_message(digits: int) -> None:
    text = b'{"kind": "testpattern", "width": ' + b"9" * digits + b"}"
    with pytest.raises(JobError) as caught:
        parse_job(text)
    assert caught.value.code is ErrorCode.INVALID_JSON
    assert caught.value.message == f"not valid JSON: an integer has {digits} digits (at most 100)"


def test_100_digits_and_a_huge_float_literal() -> None:
    # 100 digits are read (and refused by the field's bounds, with its path) ...
    with pytest.raises(JobError) as caught:
        parse_job(b'{"kind": "testpattern", "width": ' + b"9" * 100 + b"}")
    assert caught.value.code is ErrorCode.INVALID_JOB and caught.value.message.startswith("width:")
    # ... in metadata too (free-form, echoed into the status as the same number)
    spec, _ = parse_job(b'{"kind": "testpattern", "metadata": {"n": -' + b"7" * 100 + b"}}")
    assert spec.metadata == {"n": -int("7" * 100)}
    # A literal beyond the range of a double never becomes inf (not even in metadata)
    for where in (b'"durationSeconds": 1e999', b'"metadata": {"x": -2e400}'):
        with pytest.raises(JobError) as caught:
            parse_job(b'{"kind": "testpattern", ' + where + b"}")
        assert caught.value.code is ErrorCode.INVALID_JSON
        assert "is too large" in caught.value.message
