"""docker-compose.yml's profile "fleet" (docs/fleet.md): Redis with persistence and
noeviction, N BullMQ workers built like export-processor. Structural: no Docker engine."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from test_compose import COMPOSE, CONTAINER_CONFIG, ENV_EXAMPLE, WEB_UID_GID, mounts, parse_duration

from spooler.config import load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    return {n: s for n, s in data["services"].items() if "fleet" in s.get("profiles", [])}


def test_the_profile_has_redis_and_workers(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", "export-processor-fleet"}


def test_redis_persists_and_never_evicts(services: dict[str, Any]) -> None:
    redis = services["redis"]
    image, _, tag = redis["image"].partition(":")
    assert image == "redis" and tag and tag != "latest" and tag.split(".")[0] >= "7"
    args = [str(a) for a in redis["command"]]
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["--maxmemory-policy"] == "noeviction"  # BullMQ requires it
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] in ("everysec", "always")  # docs/fleet.md: what each loses
    assert "redis_data" in mounts(redis) and mounts(redis)["redis_data"] == "/data"
    assert redis["healthcheck"]["test"][-1] == "ping"
    assert "ports" not in redis, "Redis stays on the compose network"


def test_workers_are_export_processors_on_the_queue(services: dict[str, Any]) -> None:
    data = yaml.safe_load(COMPOSE.read_text())
    spool_daemon = data["services"]["export-processor"]
    worker = services["export-processor-fleet"]
    assert worker["image"] == spool_daemon["image"] and worker["build"] == spool_daemon["build"]
    assert worker["user"] == WEB_UID_GID and worker["init"] is True
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["healthcheck"]["test"] == ["CMD", "spooler", "health"]
    assert str(worker["deploy"]["replicas"]).startswith("${FLEET_WORKERS:-")
    assert "FLEET_WORKERS=" in ENV_EXAMPLE.read_text()
    env = worker["environment"]
    assert urlparse(env["SPOOLER_BULLMQ__REDIS_URL"]).hostname == "redis"
    # The settings the container runs with are valid and say bullmq.
    saved = dict(os.environ)
    try:
        os.environ.update({k: str(v) for k, v in env.items() if k != "SPOOLER_CONFIG"})
        settings = load_settings(CONTAINER_CONFIG)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert settings.intake == "bullmq"
    # Outputs on the shared volume, in a folder of their own (never the spool daemon's spool).
    spool = load_settings(CONTAINER_CONFIG).spool_dir
    assert settings.spool_dir != spool
    assert PurePosixPath(settings.spool_dir).is_relative_to(mounts(worker)["media_data"])
    drain = settings.shutdown_grace_seconds + settings.kill_grace_seconds
    assert parse_duration(worker["stop_grace_period"]) >= drain + 5


def test_node_and_python_bullmq_are_pinned_together() -> None:
    package = json.loads((ROOT / "web" / "package.json").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert package["devDependencies"]["bullmq"] == package["peerDependencies"]["bullmq"] == "6.4.0"
    assert package["devDependencies"]["ioredis"] == package["peerDependencies"]["ioredis"]
    assert '"bullmq==3.4.4"' in pyproject
