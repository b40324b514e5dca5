"""Helpers for tests that drive a real daemon process: the spool, the daemon, small jobs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spooler.layout import SpoolLayout

FAST_SETTINGS: dict[str, str] = {
    # Short periods so crash and lease tests finish in seconds, not minutes.
    "SPOOLER_RESCAN_SECONDS": "0.5",
    "SPOOLER_HEARTBEAT_SECONDS": "0.5",
    "SPOOLER_LEASE_SECONDS": "3",
    "SPOOLER_SETTLE_SECONDS": "1",
    "SPOOLER_TICK_SECONDS": "0.05",
    "SPOOLER_STATUS_INTERVAL_SECONDS": "0.2",
    "SPOOLER_KILL_GRACE_SECONDS": "1",
    "SPOOLER_SHUTDOWN_GRACE_SECONDS": "2",
    "SPOOLER_RETRY__BACKOFF_BASE_SECONDS": "0.2",
    "SPOOLER_RETRY__BACKOFF_MAX_SECONDS": "1",
    "SPOOLER_LOG_FORMAT": "json",
    "SPOOLER_LOG_LEVEL": "debug",
    "SPOOLER_FFMPEG_NICE": "0",
}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 30.0
) -> None:
    """Wait until `proc` (a server the test started) accepts connections on `port`; kill
    it and fail if it exits or takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{name} did not start") from None
            time.sleep(0.1)


def tiny_job(duration: float = 0.2, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "testpattern",
        "durationSeconds": duration,
        "width": 32,
        "height": 32,
        "fps": 10,
        **extra,
    }


@dataclass
class Spool:
    root: Path
    media: Path

    @property
    def layout(self) -> SpoolLayout:
        return SpoolLayout(self.root)

    def submit(self, job_id: str, payload: Any) -> Path:
        """The documented atomic submit: a dot-file, then a rename."""
        self.layout.inbox.mkdir(parents=True, exist_ok=True)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        tmp = self.layout.inbox / f".{job_id}.json.tmp"
        tmp.write_bytes(data)
        final = self.layout.inbox_job(job_id)
        tmp.rename(final)
        return final

    def status(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.layout.status_file(job_id).read_text())
        except FileNotFoundError:
            return None

    def wait_for(
        self, job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status(job_id)
            if last is not None and predicate(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"{job_id}: condition not met within {timeout} s; last status {last}")

    def wait_state(self, job_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_for(job_id, lambda s: s["state"] in states, timeout)

    def wait_final(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_state(
            job_id, "succeeded", "failed", "cancelled", "rejected", timeout=timeout
        )

    def temp_leftovers(self, settle: float = 1.0) -> list[Path]:
        """Temporary files left behind. A running daemon's atomic write (a heartbeat every
        fraction of a second) has one for a moment: only a temp still there `settle` seconds
        later counts (each write's temp has a fresh random name)."""

        def scan() -> set[Path]:
            return {p for p in self.root.rglob(".tmp-*") if "trash" not in p.parts}

        seen = scan()
        if seen:
            time.sleep(settle)
            seen &= scan()
        return sorted(seen)


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_event(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == name:
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no {name} event within {timeout} s:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
