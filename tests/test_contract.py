"""The public contract stays in sync with the code: committed schemas and docs/protocol.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spooler.errors import ErrorCode
from spooler.schema import all_schemas, render
from spooler.status import JobStatus, State

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"


@pytest.mark.parametrize("name", sorted(all_schemas()))
def test_committed_schema_matches_the_models(name: str) -> None:
    committed = ROOT / "schema" / name
    assert committed.exists(), f"run `make schema` to create {committed}"
    assert committed.read_text() == render(all_schemas()[name]), (
        f"{committed} is out of date: run `make schema` and commit the result"
    )


def test_protocol_names_every_state_and_error_code() -> None:
    text = PROTOCOL.read_text()
    for state in State:
        assert f"`{state.value}`" in text, f"state {state.value} is not documented"
    for code in ErrorCode:
        assert f"`{code.value}`" in text, f"error code {code.value} is not documented"


def test_protocol_documents_every_status_field() -> None:
    text = PROTOCOL.read_text()
    for field in JobStatus.model_json_schema(by_alias=True)["properties"]:
        assert f"`{field}`" in text, f"status field {field} is not documented"


def test_status_examples_in_the_protocol_are_valid() -> None:
    blocks = re.findall(r"```json\n(.*?)```", PROTOCOL.read_text(), flags=re.S)
    statuses = [json.loads(b) for b in blocks if '"schemaVersion"' in b and '"state"' in b]
    assert statuses, "docs/protocol.md should show a full status example"
    for example in statuses:
        JobStatus.model_validate(example)
