"""systemd/: the unit verifies, rates <= 2.0 in `systemd-analyze security`, and agrees with
config/systemd.yaml and the spool layout.

The checks that need systemd's tools are skipped (with the reason) only when they are
missing; .ci/run installs them (Debian package `systemd`). No running systemd is needed:
`verify` works on a scratch root, `security --offline=true` on the file alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spooler.config import Settings, load_settings
from spooler.layout import SpoolLayout

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "spooler.service"
TMPFILES = ROOT / "systemd" / "spooler.tmpfiles.conf"
SYSUSERS = ROOT / "systemd" / "spooler.sysusers.conf"
CONFIG = ROOT / "config" / "systemd.yaml"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (apt-get install systemd; .ci/run does it)",
)


def unit_entries(path: Path = UNIT) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd allows repeats), comments dropped."""
    entries: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def one(entries: dict[str, list[str]], key: str) -> str:
    values = entries.get(key)
    assert values, f"{key}= missing from {UNIT.name}"
    return values[-1]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"cannot read time span {value!r}"
    return float(match[1]) * (60 if match[2] in ("min", "m") else 1)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(CONFIG)


def scratch_root(tmp_path: Path) -> Path:
    """A file-system root holding the unit, the executable it names and systemd's own
    units (verify resolves sysinit.target and friends inside --root)."""
    root = tmp_path / "root"
    entries = unit_entries()
    executable = one(entries, "ExecStart").split()[0].lstrip("-@:+!")
    binary = root / executable.lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    # ExecReload's kill(1), present on every system the unit is installed on.
    kill = root / "bin/kill"
    kill.parent.mkdir(parents=True)
    kill.write_text("#!/bin/sh\nexit 0\n")
    kill.chmod(0o755)
    for system_dir in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if system_dir.is_dir():
            shutil.copytree(system_dir, root / "usr/lib/systemd/system", symlinks=True)
            break
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    return root


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            f"--root={root}",
            f"/etc/systemd/system/{UNIT.name}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    # verify exits 0 on unknown keys and bad values ("..., ignoring"): any message fails.
    assert output == "", output


@needs_analyze
def test_exposure_is_at_most_two(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            "--no-pager",
            str(UNIT),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, f"no exposure score in the output:\n{output}"
    score = float(match[1])
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{output}"
    assert result.returncode == 0, output


def test_unit_shape() -> None:
    entries = unit_entries()
    assert one(entries, "Type") == "notify"
    assert one(entries, "Restart") == "on-failure"
    assert one(entries, "KillMode") == "mixed"
    assert one(entries, "User") == one(entries, "Group") == "spooler"
    assert "DynamicUser" not in entries, "files are shared with the web app: a fixed user"
    assert one(entries, "UMask") == "0002"
    assert one(entries, "ProtectSystem") == "strict"
    assert one(entries, "NoNewPrivileges") == "yes"
    assert "@system-service" in entries["SystemCallFilter"]
    # @resources holds setpriority, which ffmpeg_nice needs.
    assert not any("@resources" in v for v in entries["SystemCallFilter"] if v.startswith("~"))
    assert "--config /etc/spooler/spooler.yaml run" in one(entries, "ExecStart")


def test_unit_timeouts_match_the_settings(settings: Settings) -> None:
    entries = unit_entries()
    drain = settings.shutdown_grace_seconds + settings.kill_grace_seconds
    assert seconds(one(entries, "TimeoutStopSec")) >= drain + 5, (
        "TimeoutStopSec must leave the daemon its drain (shutdown + kill grace) plus margin"
    )
    assert seconds(one(entries, "WatchdogSec")) >= 5 * settings.heartbeat_seconds


def test_unit_paths_match_the_settings(settings: Settings) -> None:
    entries = unit_entries()
    writable = [p.lstrip("-") for v in entries["ReadWritePaths"] for p in v.split()]
    readonly = [p.lstrip("-") for v in entries["ReadOnlyPaths"] for p in v.split()]
    assert writable == [str(settings.spool_dir)], "the spool, and only the spool, is writable"
    for media in settings.media_roots:
        assert str(media) in readonly
    assert settings.metrics_file is not None
    state_dirs = [f"/var/lib/{d}" for v in entries["StateDirectory"] for d in v.split()]
    assert str(settings.metrics_file.parent) in state_dirs
    assert str(settings.spool_dir) in one(entries, "RequiresMountsFor").split()


def test_tmpfiles_create_the_spool_tree(settings: Settings) -> None:
    lines = [
        line.split()
        for line in TMPFILES.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    paths = {fields[1]: fields for fields in lines}
    layout = SpoolLayout(settings.spool_dir)
    for directory in (layout.root, *layout.all_dirs()):
        fields = paths.get(str(directory))
        assert fields is not None, f"{directory} missing from {TMPFILES.name}"
        kind, _path, mode, user, group = fields[:5]
        assert kind == "d" and user == "spooler" and group == "spooler"
        assert int(mode, 8) & 0o2070 == 0o2070, f"{directory}: setgid and group rwx"


@pytest.mark.skipif(
    shutil.which("systemd-tmpfiles") is None or shutil.which("systemd-sysusers") is None,
    reason="systemd-tmpfiles/systemd-sysusers not installed (apt-get install systemd)",
)
def test_sysusers_and_tmpfiles_apply_on_a_scratch_root(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", "-"],
        input=SYSUSERS.read_bytes(),
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert re.search(r"^spooler:", (root / "etc/passwd").read_text(), re.M)
    conf = root / "etc/tmpfiles.d/spooler.conf"
    conf.parent.mkdir(parents=True)
    shutil.copy(TMPFILES, conf)
    result = subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", "spooler.conf"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    spool = root / str(settings.spool_dir).lstrip("/")
    for directory in SpoolLayout(spool).all_dirs():
        assert directory.is_dir()
    assert spool.stat().st_mode & 0o2775 == 0o2775


SYSTEM_PYTHON = "/usr/bin/python3"
SANDBOX = Path(__file__).resolve().parent / "unit_sandbox.py"


def sandbox_unavailable() -> str | None:
    """Why the syscall-filter emulation cannot run here, or None."""
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze not installed (apt-get install systemd)"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, text=True, check=False
    ) if Path(SYSTEM_PYTHON).exists() else None  # fmt: skip
    if probe is None or probe.returncode != 0:
        return (
            "python3-seccomp not installed for /usr/bin/python3 (apt-get install python3-seccomp)"
        )
    trial = subprocess.run(
        [SYSTEM_PYTHON, str(SANDBOX), str(UNIT), "--", "true"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if trial.returncode != 0:
        return f"cannot apply the unit's sandbox here: {trial.stderr.strip()[-300:]}"
    return None


def test_daemon_and_ffmpeg_run_under_the_units_syscall_filter(tmp_path: Path) -> None:
    """The real daemon, with ffmpeg, under the unit's SystemCallFilter, NoNewPrivileges and
    MemoryDenyWriteExecute (emulated with libseccomp and prctl: tests/unit_sandbox.py)."""
    reason = sandbox_unavailable()
    if reason:
        pytest.skip(reason)
    spool = tmp_path / "spool"
    media = tmp_path / "media"
    media.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env.update(
        SPOOLER_SPOOL_DIR=str(spool),
        SPOOLER_MEDIA_ROOTS=json.dumps([str(media)]),
        SPOOLER_HEARTBEAT_SECONDS="0.5",
        SPOOLER_LEASE_SECONDS="3",
        SPOOLER_RESCAN_SECONDS="0.5",
        SPOOLER_TICK_SECONDS="0.05",
        SPOOLER_KILL_GRACE_SECONDS="1",
        SPOOLER_SHUTDOWN_GRACE_SECONDS="2",
        SPOOLER_LOG_FORMAT="json",
        SPOOLER_FFMPEG_NICE="5",
    )
    log_path = tmp_path / "daemon.log"
    command = [SYSTEM_PYTHON, str(SANDBOX), str(UNIT), "--", sys.executable, "-m", "spooler", "run"]
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    layout = SpoolLayout(spool)

    def submit(job_id: str, job: dict[str, object]) -> None:
        layout.inbox.mkdir(parents=True, exist_ok=True)
        tmp = layout.inbox / f".{job_id}.json.tmp"
        tmp.write_text(json.dumps(job))
        tmp.rename(layout.inbox_job(job_id))

    def wait_state(job_id: str, *states: str, timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status: dict[str, object] = json.loads(layout.status_file(job_id).read_text())
            except (FileNotFoundError, ValueError):
                status = {}
            if status.get("state") in states:
                return status
            if daemon.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{job_id} not {states}:\n{log_path.read_text()[-4000:]}")

    try:
        tiny = {"kind": "testpattern", "durationSeconds": 0.5, "width": 32, "height": 32}
        submit("sandboxed-1", tiny)
        done = wait_state("sandboxed-1", "succeeded", "failed", "rejected")
        assert done["state"] == "succeeded", done
        submit("sandboxed-2", {**tiny, "durationSeconds": 60, "realtime": True})
        wait_state("sandboxed-2", "running")
        time.sleep(0.5)
        (layout.inbox / "sandboxed-2.cancel").touch()
        assert wait_state("sandboxed-2", "cancelled", "failed")["state"] == "cancelled"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0, log_path.read_text()[-4000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
    log = log_path.read_text()
    started = next(json.loads(line) for line in log.splitlines() if "daemon_started" in line)
    assert started["watcher"] == "inotify", "inotify must work inside the filter"
    assert "Operation not permitted" not in log
