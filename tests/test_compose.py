"""docker-compose.yml, Dockerfile and .env.example agree with each other and with
config/container.yaml. Structural only: no Docker engine is needed (or used)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from spooler.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
CONTAINER_CONFIG = ROOT / "config" / "container.yaml"
WEB_UID_GID = "1001:1001"  # the Next.js image's nextjs:nodejs user


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(CONTAINER_CONFIG)


def dockerfile_final_stage() -> list[str]:
    """Instructions of the last stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def instruction(stage: list[str], name: str) -> list[str]:
    return [line[len(name) + 1 :].strip() for line in stage if line.upper().startswith(name + " ")]


def parse_duration(value: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    assert total > 0, f"cannot read duration {value!r}"
    return total


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """volume name -> mount path, from short ("media_data:/data[:ro]") or long syntax."""
    out: dict[str, str] = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry["source"], entry["target"]
        out[source] = target
    return out


def within(path: Path, mount: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(mount))


def default_services(compose: dict[str, Any]) -> dict[str, Any]:
    """Services started without a profile (the fleet profile is checked in test_fleet_compose)."""
    return {n: s for n, s in compose["services"].items() if not s.get("profiles")}


def test_services_and_volume(compose: dict[str, Any]) -> None:
    assert set(default_services(compose)) == {"web", "export-processor"}
    assert "media_data" in compose["volumes"]
    for name, service in default_services(compose).items():
        assert "media_data" in mounts(service), f"{name} must mount media_data"
        assert service.get("init") is True, f"{name}: init: true (signals, zombies)"
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        assert service.get("user") == WEB_UID_GID, f"{name} must run as {WEB_UID_GID}"
        env_files = service.get("env_file", [])
        assert any((e if isinstance(e, str) else e["path"]).endswith(".env") for e in env_files), (
            f"{name}: env_file .env"
        )


def test_web_image_and_build_come_from_env(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    assert re.fullmatch(r"\$\{WEB_IMAGE:-[^}]+\}", web["image"])
    assert re.fullmatch(r"\$\{WEB_BUILD_CONTEXT:-[^}]+\}", web["build"]["context"])
    assert web["depends_on"]["export-processor"]["condition"] == "service_healthy"


def test_every_variable_is_documented_in_env_example(compose: dict[str, Any]) -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    assert used, "compose should take its variable parts from .env"
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    placeholder = re.search(r"^WEB_IMAGE=(.+)$", ENV_EXAMPLE.read_text(), re.M)
    assert placeholder and "PLACEHOLDER" in ENV_EXAMPLE.read_text()


def test_export_processor_builds_our_dockerfile(compose: dict[str, Any]) -> None:
    service = compose["services"]["export-processor"]
    assert service["build"]["context"] == "."
    assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    uid, gid = WEB_UID_GID.split(":")
    assert service["build"]["args"] == {"APP_UID": uid, "APP_GID": gid}


def test_dockerfile_shape() -> None:
    stage = dockerfile_final_stage()
    assert stage[0].split()[1] == "python:3.11-slim"
    args = dict(a.split("=", 1) for a in instruction(stage, "ARG"))
    assert f"{args['APP_UID']}:{args['APP_GID']}" == WEB_UID_GID
    assert instruction(stage, "USER") == ["${APP_UID}:${APP_GID}"]
    assert instruction(stage, "ENTRYPOINT") == ['["spooler", "run"]']
    [healthcheck] = instruction(stage, "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["spooler", "health"]')
    # The pip install brings ffmpeg (imageio-ffmpeg is a dependency of the package).
    assert any("pip install" in run for run in instruction(stage, "RUN"))
    assert "imageio-ffmpeg" in (ROOT / "pyproject.toml").read_text()


def test_container_config_is_baked_where_spooler_config_points(
    compose: dict[str, Any],
) -> None:
    stage = dockerfile_final_stage()
    env = " ".join(instruction(stage, "ENV"))
    config_path = re.search(r"SPOOLER_CONFIG=(\S+)", env)
    assert config_path, "the image must set SPOOLER_CONFIG"
    assert f"COPY config/container.yaml {config_path[1]}" in stage
    service_env = compose["services"]["export-processor"].get("environment", {})
    assert service_env.get("SPOOLER_CONFIG", config_path[1]) == config_path[1]


def test_paths_agree_with_the_container_config(compose: dict[str, Any], settings: Settings) -> None:
    services = compose["services"]
    daemon_mount = mounts(services["export-processor"])["media_data"]
    web_mount = mounts(services["web"])["media_data"]
    assert daemon_mount == web_mount, "one path for both: a job's paths mean the same to both"
    assert within(settings.spool_dir, daemon_mount), "the spool must live on the shared volume"
    for media in settings.media_roots:
        assert within(media, daemon_mount), f"{media} must live on the shared volume"
    web_env = services["web"]["environment"]
    assert web_env["SPOOLER_SPOOL_DIR"] == str(settings.spool_dir)
    assert web_env["SPOOLER_MEDIA_DIR"] == str(settings.media_roots[0])
    # The image prepares the mount point, so a new volume starts out owned by 1001:1001.
    runs = " ".join(instruction(dockerfile_final_stage(), "RUN"))
    assert f"mkdir -p {settings.spool_dir} {settings.media_roots[0]}" in runs
    assert f'chown -R "${{APP_UID}}:${{APP_GID}}" {daemon_mount}' in runs


def test_grace_periods_match_the_daemon(compose: dict[str, Any], settings: Settings) -> None:
    service = compose["services"]["export-processor"]
    drain = settings.shutdown_grace_seconds + settings.kill_grace_seconds
    assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert parse_duration(service["stop_grace_period"]) >= drain + 5, (
        "Docker's SIGKILL must come after the daemon's drain (shutdown + kill grace) + margin"
    )


def test_healthcheck_uses_spooler_health(compose: dict[str, Any], settings: Settings) -> None:
    check = compose["services"]["export-processor"]["healthcheck"]
    assert check["test"] == ["CMD", "spooler", "health"]
    # A heartbeat counts as fresh for 3 beats; checking less often than that is pointless
    # and a timeout shorter than a beat would flap.
    assert parse_duration(check["interval"]) >= 3 * settings.heartbeat_seconds
    assert parse_duration(check["timeout"]) >= settings.heartbeat_seconds
    assert parse_duration(check["start_period"]) > 0


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for heavy in (".venv", ".git", "var", "web"):
        assert heavy in ignored


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no `docker compose` plugin on this machine (structure is checked above)",
)
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
