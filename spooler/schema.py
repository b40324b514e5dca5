"""JSON Schemas of the public files, generated from the pydantic models (committed under
schema/; a test fails when the committed copies drift from the models)."""

from __future__ import annotations

import functools
import json
import operator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from spooler.ingest.models import ProxyManifest, SyncResult
from spooler.kinds import KINDS
from spooler.status import JobStatus

SCHEMA_DIR_NAME = "schema"


def job_schema() -> dict[str, Any]:
    models = tuple(kind.spec_model for kind in sorted(KINDS.values(), key=lambda k: k.name))
    union: Any = functools.reduce(operator.or_, models)
    if len(models) > 1:
        union = Annotated[union, Field(discriminator="kind")]
    schema = TypeAdapter(union).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "spooler job file (inbox/<jobId>.json)"
    return schema


def status_schema() -> dict[str, Any]:
    schema = JobStatus.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "spooler status file (jobs/<jobId>/status.json)"
    return schema


def _file_schema(model: Any, title: str) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    return {
        "job.schema.json": job_schema(),
        "status.schema.json": status_schema(),
        "manifest.schema.json": _file_schema(
            ProxyManifest, "spooler proxy manifest (<derived root>/manifests/<source>.json)"
        ),
        "sync.schema.json": _file_schema(
            SyncResult, "spooler sync result (jobs/<jobId>/sync.json)"
        ),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
