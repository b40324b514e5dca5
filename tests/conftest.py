"""Fixtures that run the real daemon as a separate process on a temporary spool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import FAST_SETTINGS, DaemonProcess, Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    root = tmp_path / "spool"
    media = tmp_path / "media"
    media.mkdir()
    return Spool(root, media)


@pytest.fixture
def make_daemon(spool: Spool, tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start a real `spooler run` process on the test's spool; settings as SPOOLER_* names."""
    started: list[DaemonProcess] = []

    def start(
        wait_ready: bool = True, extra_env: dict[str, str] | None = None, **settings: Any
    ) -> DaemonProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
        env.update(extra_env or {})
        env.update(FAST_SETTINGS)
        env["SPOOLER_SPOOL_DIR"] = str(spool.root)
        env["SPOOLER_MEDIA_ROOTS"] = json.dumps([str(spool.media)])
        for key, value in settings.items():
            env[key if key.startswith("SPOOLER_") else f"SPOOLER_{key.upper()}"] = str(value)
        log_path = tmp_path / f"daemon-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "spooler", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        daemon = DaemonProcess(proc, log_path, env)
        started.append(daemon)
        if wait_ready:
            daemon.wait_event("daemon_started")
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)
