"""config/spooler.yaml documents every setting with its default: fail when it drifts from the
Settings model, and check how bad settings and SPOOLER_* environment variables behave."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from spooler.config import Settings, load_settings
from spooler.errors import ConfigError

CONFIG_FILE = Path(__file__).resolve().parent.parent / "config" / "spooler.yaml"

# Defaults computed from the machine: documented as a commented-out line, never set.
COMPUTED = {"max_jobs"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SPOOLER_* variable of the developer's shell may leak into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("SPOOLER_"):
            monkeypatch.delenv(name)


def _yaml() -> dict[str, Any]:
    data = yaml.safe_load(CONFIG_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "config/spooler.yaml must hold a mapping"
    return data


def _section(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _walk(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """Every leaf setting as (dotted key, field), nested sections included."""
    leaves: list[tuple[str, FieldInfo]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field)
        if section is not None:
            leaves.extend(_walk(section, f"{key}."))
        else:
            leaves.append((key, field))
    return leaves


def _lookup(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


LEAVES = _walk(Settings)


def test_the_walk_sees_nested_sections() -> None:
    keys = {key for key, _ in LEAVES}
    assert {"retention.succeeded_days", "retry.jitter", "limits.stall_seconds",
            "export.allow_urls", "spool_dir", "max_jobs"} <= keys  # fmt: skip


def test_the_file_loads_and_equals_the_embedded_defaults() -> None:
    assert load_settings(CONFIG_FILE) == Settings()


@pytest.mark.parametrize(("key", "field"), LEAVES, ids=[key for key, _ in LEAVES])
def test_every_setting_is_in_the_file_with_its_default(key: str, field: FieldInfo) -> None:
    present, value = _lookup(_yaml(), key)
    if key in COMPUTED:
        assert not present, f"{key} has a computed default: leave it commented out"
        pattern = rf"^\s*#\s*{re.escape(key.rsplit('.', 1)[-1])}\s*:"
        assert re.search(pattern, CONFIG_FILE.read_text(encoding="utf-8"), re.MULTILINE), (
            f"{key} must appear commented out in {CONFIG_FILE.name}"
        )
        return
    assert present, f"{key} is missing from {CONFIG_FILE.name}"
    adapter: TypeAdapter[Any] = TypeAdapter(field.annotation)
    default = adapter.validate_python(field.get_default(call_default_factory=True))
    assert adapter.validate_python(value) == default, (
        f"{key}: the file says {value!r}, the code's default is {default!r}"
    )


def test_the_file_has_no_key_the_model_lacks() -> None:
    known = {key for key, _ in LEAVES} | {
        name for name, field in Settings.model_fields.items() if _section(field)
    }

    def keys(node: dict[str, Any], prefix: str = "") -> list[str]:
        found = []
        for name, value in node.items():
            found.append(f"{prefix}{name}")
            if isinstance(value, dict):
                found.extend(keys(value, f"{prefix}{name}."))
        return found

    assert set(keys(_yaml())) <= known


def test_every_setting_has_a_comment() -> None:
    lines = CONFIG_FILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[a-z_]+\s*:", line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") or "#" in line, f"line {number + 1} has no comment: {line}"


# -- bad settings ----------------------------------------------------------------------------
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spooler.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("max_jobs: 0\n", "max_jobs"),
        ("max_jobz: 2\n", "max_jobz"),
        ("retention: {succeeded_days: -1}\n", "retention.succeeded_days"),
        ("retention: {sucseeded_days: 1}\n", "retention.sucseeded_days"),
        ("retry: {jitter: 2}\n", "retry.jitter"),
        ("watch_mode: fanotify\n", "watch_mode"),
        ("heartbeat_seconds: 20\nlease_seconds: 30\n", "lease_seconds"),
        ("limits: {min_priority: 5, max_priority: 1}\n", "min_priority"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_the_key(
    tmp_path: Path, text: str, mentions: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text))
    assert mentions in str(caught.value)


def test_a_file_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(_write(tmp_path, "- max_jobs\n"))


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "retention: {succeeded_days: 1\n"))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


# -- environment -----------------------------------------------------------------------------
def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "max_jobs: 2\nlog_level: warning\nmedia_roots: [/srv/a]\n")
    monkeypatch.setenv("SPOOLER_MAX_JOBS", "3")
    monkeypatch.setenv("SPOOLER_MEDIA_ROOTS", '["/srv/b", "/srv/c"]')
    settings = load_settings(path)
    assert settings.max_jobs == 3
    assert settings.media_roots == [Path("/srv/b"), Path("/srv/c")]
    assert settings.log_level == "warning"  # not overridden: the file's value stays


def test_nested_environment_overrides_one_key_of_a_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "retention: {succeeded_days: 9, failed_days: 1}\n")
    monkeypatch.setenv("SPOOLER_RETENTION__SUCCEEDED_DAYS", "3")
    settings = load_settings(path)
    assert settings.retention.succeeded_days == 3
    assert settings.retention.failed_days == 1  # the rest of the file's section is kept
    assert settings.retention.cancelled_days == Settings().retention.cancelled_days


def test_environment_overrides_the_shipped_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOLER_LIMITS__STALL_SECONDS", "7.5")
    monkeypatch.setenv("SPOOLER_WATCH_MODE", "polling")
    settings = load_settings(CONFIG_FILE)
    assert settings.limits.stall_seconds == 7.5
    assert settings.watch_mode == "polling"


def test_spooler_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOOLER_CONFIG", str(_write(tmp_path, "ffmpeg_nice: 4\n")))
    assert load_settings().ffmpeg_nice == 4


def test_a_bad_environment_value_is_a_config_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPOOLER_RETRY__MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match=r"retry\.max_attempts"):
        load_settings(CONFIG_FILE)
