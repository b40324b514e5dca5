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
from spooler.webhooks.events import WebhookPayload

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


def webhook_schema() -> dict[str, Any]:
    schema = WebhookPayload.model_json_schema(by_alias=True, mode="serialization")
    # One TypeScript file holds every schema's types: names shared with the status file's
    # definitions get a prefix instead of colliding (ErrorCode -> WebhookErrorCode).
    shared = set(status_schema().get("$defs", {}))
    renamed: dict[str, Any] = _rename_defs(
        schema, {n: f"Webhook{n}" for n in schema.get("$defs", {}) if n in shared}
    )
    schema = renamed
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "spooler webhook body (docs/webhooks.md)"
    return schema


def _rename_defs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_rename_defs(item, names) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$defs":
            out[key] = {}
            for name, definition in value.items():
                renamed = _rename_defs(definition, names)
                if name in names and renamed.get("title") == name:
                    renamed["title"] = names[name]  # the TypeScript name comes from the title
                out[key][names.get(name, name)] = renamed
        elif key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            name = value.removeprefix("#/$defs/")
            out[key] = f"#/$defs/{names.get(name, name)}"
        else:
            out[key] = _rename_defs(value, names)
    return out


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
        "webhook.schema.json": webhook_schema(),
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
