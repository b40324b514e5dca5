"""Real parts for the fleet tests: a redis-server of our own on a free loopback port, the
Node producer (web/scripts/fleet-driver.mjs over the built web/src/bullmq.ts), and spooler
workers with `intake: bullmq` as separate processes."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import FAST_SETTINGS, DaemonProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"

# A lock of 2 s checked every 0.5 s: a dead or frozen worker loses its job in ~2.5 s.
FLEET_SETTINGS: dict[str, str] = {
    "SPOOLER_INTAKE": "bullmq",
    "SPOOLER_BULLMQ__LOCK_DURATION_MS": "2000",
    "SPOOLER_BULLMQ__STALLED_INTERVAL_MS": "500",
    "SPOOLER_BULLMQ__CANCEL_POLL_SECONDS": "0.5",
}


@dataclass
class RedisServer:
    """redis-server on 127.0.0.1 with AOF (fsync always: a restart loses nothing) and no
    RDB snapshots, its files in a temporary folder."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _client: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "redis.log").open("ab") as log:
            self.proc = self._popen(binary, log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def _popen(self, binary: str, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--maxmemory-policy", "noeviction",
                "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a clean shutdown (AOF flushed)
            self.proc.wait(timeout=10)

    def client(self) -> Any:
        """One client while the server runs (closed by stop)."""
        import redis

        if self._client is None:
            self._client = redis.Redis.from_url(self.url)
        return self._client


class NodeDriver:
    """The web app's side: BullMQ for Node enqueueing, cancelling and listening (QueueEvents)."""

    def __init__(self, redis_url: str, queue_name: str = "exports") -> None:
        env = {**os.environ, "REDIS_URL": redis_url, "QUEUE": queue_name}
        self.proc = subprocess.Popen(
            ["node", str(WEB / "scripts" / "fleet-driver.mjs")],
            cwd=WEB,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda e: e["event"] == "ready", timeout=15)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)
            self._new.put(event)

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.snapshot():
            if predicate(event):
                return event
        while time.monotonic() < deadline:
            try:
                event = self._new.get(timeout=0.1)
            except queue.Empty:
                continue
            if predicate(event):
                return event
        raise AssertionError(f"no matching Node event within {timeout} s: {self.snapshot()[-5:]}")

    def final(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait(
            lambda e: e.get("jobId") == job_id and e["event"] in ("completed", "failed"), timeout
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(op="close")
                self.proc.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def start_worker(
    tmp_path: Path, redis_url: str, index: int, spool_dir: Path | None = None, **settings: str
) -> DaemonProcess:
    """`spooler run` with the BullMQ intake; its own output folder unless one is shared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env.update(FAST_SETTINGS)
    env.update(FLEET_SETTINGS)
    env["SPOOLER_SPOOL_DIR"] = str(spool_dir or tmp_path / f"worker-{index}")
    env["SPOOLER_MEDIA_ROOTS"] = json.dumps([str(tmp_path)])
    env["SPOOLER_WORKER_NAME"] = f"w{index}"
    env["SPOOLER_MAX_JOBS"] = "1"
    env["SPOOLER_BULLMQ__REDIS_URL"] = redis_url
    env["SPOOLER_LOG_LEVEL"] = "info"
    env.update(settings)
    log_path = tmp_path / f"worker-{index}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spooler", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    worker = DaemonProcess(proc, log_path, env)
    worker.wait_event("daemon_started")
    return worker


def completions(workers: list[DaemonProcess]) -> dict[str, list[str]]:
    """job id -> the workers whose own log says BullMQ accepted its completion."""
    done: dict[str, list[str]] = {}
    for worker in workers:
        for event in worker.events():
            if event.get("event") == "queue_job_completed":
                done.setdefault(event["job_id"], []).append(worker.env["SPOOLER_WORKER_NAME"])
    return done


def settled_completions(
    workers: list[DaemonProcess], count: int, timeout: float = 5.0
) -> dict[str, list[str]]:
    """completions() once `count` ids are logged (the log line follows Node's event)."""
    deadline = time.monotonic() + timeout
    while True:
        done = completions(workers)
        if len(done) >= count or time.monotonic() >= deadline:
            time.sleep(0.3)  # a duplicate would be logged by now
            return completions(workers)
        time.sleep(0.05)


def ffmpeg_pids(job_dir: Path) -> list[int]:
    """The ffmpeg processes the job's log names (`# ffmpeg pid N`)."""
    log = job_dir / "job.log"
    if not log.exists():
        return []
    return [
        int(line.split()[-1])
        for line in log.read_text().splitlines()
        if line.startswith("# ffmpeg pid")
    ]
