"""Who a daemon is (worker id), its heartbeat file, and whether another worker is alive.

Leases never compare one host's clock with another's: a heartbeat's age is the difference
between two mtimes stamped by the same file server (theirs, and ours just written).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from spooler import __version__
from spooler.fsutil import FileTooLarge, UnsafeFile, atomic_write_json, read_untrusted
from spooler.layout import PROTOCOL_VERSION, SpoolLayout
from spooler.status import WorkerRef, iso

_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
WORKER_ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,80}")
# A heartbeat is a few hundred bytes; a larger file in workers/ is not one.
HEARTBEAT_MAX_BYTES = 64 * 1024


def process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (guards against pid reuse)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_namespace() -> str:
    """Boot id plus pid namespace: pids are only comparable between equal namespaces
    (two containers may share a host name but never a pid namespace)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "unknown"
    return f"{boot}:{pidns}"


@dataclass(frozen=True)
class WorkerIdentity:
    id: str
    host: str
    pid: int
    start_ticks: int | None
    namespace: str = "unknown"

    @classmethod
    def current(cls, name: str | None = None) -> WorkerIdentity:
        host = name or socket.gethostname()
        pid = os.getpid()
        safe_host = _UNSAFE.sub("-", host).strip("-")[:40] or "host"
        worker_id = f"{safe_host}-{pid}-{secrets.token_hex(3)}"
        return cls(worker_id, host, pid, process_start_ticks(pid), process_namespace())

    def ref(self) -> WorkerRef:
        return WorkerRef(id=self.id, host=self.host, pid=self.pid)


@dataclass(frozen=True)
class Heartbeat:
    worker_id: str
    host: str
    pid: int
    start_ticks: int | None
    namespace: str
    mtime: float
    data: dict[str, Any]
    # The owner's own settings (protocol 1.1); None from older daemons.
    heartbeat_seconds: float | None = None
    lease_seconds: float | None = None


def write_heartbeat(
    layout: SpoolLayout,
    me: WorkerIdentity,
    *,
    started_at: datetime,
    now: datetime,
    running: list[str],
    max_jobs: int,
    state: str,
    heartbeat_seconds: float,
    lease_seconds: float,
    capabilities: dict[str, Any] | None = None,
) -> float:
    """Rewrite our heartbeat; return its mtime (the file server's idea of now)."""
    path = layout.heartbeat_file(me.id)
    atomic_write_json(
        path,
        {
            "protocolVersion": PROTOCOL_VERSION,
            "workerId": me.id,
            "host": me.host,
            "pid": me.pid,
            "startTicks": me.start_ticks,
            "namespace": me.namespace,
            "version": __version__,
            "state": state,
            "startedAt": iso(started_at),
            "lastBeat": iso(now),
            "maxJobs": max_jobs,
            "jobsRunning": running,
            "heartbeatSeconds": heartbeat_seconds,
            "leaseSeconds": lease_seconds,
            "capabilities": capabilities or {},
        },
        durable=False,
    )
    return path.stat().st_mtime


def read_heartbeats(layout: SpoolLayout) -> dict[str, Heartbeat]:
    beats: dict[str, Heartbeat] = {}
    try:
        entries = list(os.scandir(layout.workers))
    except FileNotFoundError:
        return beats
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
            raw = read_untrusted(Path(entry.path), HEARTBEAT_MAX_BYTES)
            beat = parse_heartbeat(json.loads(raw), mtime)
        except (OSError, ValueError, UnsafeFile, FileTooLarge, RecursionError):
            continue  # not a heartbeat (any client may write here): its worker is unknown
        if beat is not None:
            beats[beat.worker_id] = beat
    return beats


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < 1e9 else None


def parse_heartbeat(data: Any, mtime: float) -> Heartbeat | None:
    """A heartbeat read from disk, or None where it is not one: every field is checked
    for its type, since a client could have written the file."""
    if not isinstance(data, dict):
        return None
    worker_id, host, pid = data.get("workerId"), data.get("host"), data.get("pid")
    ticks, namespace = data.get("startTicks"), data.get("namespace", "unknown")
    if not (isinstance(worker_id, str) and WORKER_ID_PATTERN.fullmatch(worker_id)):
        return None
    if not isinstance(host, str) or not isinstance(namespace, str):
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**22:
        return None
    if ticks is not None and (isinstance(ticks, bool) or not isinstance(ticks, int)):
        ticks = None
    return Heartbeat(
        worker_id=worker_id,
        host=host,
        pid=pid,
        start_ticks=ticks,
        namespace=namespace,
        mtime=mtime,
        data=data,
        heartbeat_seconds=_number(data.get("heartbeatSeconds")),
        lease_seconds=_number(data.get("leaseSeconds")),
    )


def lease_of(beat: Heartbeat, default_lease: float, max_lease: float) -> float:
    """How long `beat` stays valid: the lease its owner announced (so a daemon with a
    shorter lease never takes over a slower-beating live one), else ours; never more than
    the operator's cap, since a heartbeat file is untrusted input."""
    announced = beat.lease_seconds if beat.lease_seconds is not None else default_lease
    return min(announced, max_lease)


def is_worker_alive(
    worker_id: str,
    beats: dict[str, Heartbeat],
    *,
    me: WorkerIdentity,
    server_now: float,
    lease_seconds: float,
    max_lease_seconds: float,
) -> bool:
    """Alive = ourselves, or a fresh heartbeat whose process (if on this host) still exists."""
    if worker_id == me.id:
        return True
    beat = beats.get(worker_id)
    if beat is None:
        return False  # never seen or shut down cleanly (it deletes its heartbeat)
    if beat.namespace == me.namespace != "unknown":
        # Same boot and pid namespace: the process table answers at once, no lease wait.
        ticks = process_start_ticks(beat.pid)
        if ticks is None or (beat.start_ticks is not None and ticks != beat.start_ticks):
            return False
    return server_now - beat.mtime <= lease_of(beat, lease_seconds, max_lease_seconds)


def remove_heartbeat(layout: SpoolLayout, me: WorkerIdentity) -> None:
    with contextlib.suppress(FileNotFoundError):
        layout.heartbeat_file(me.id).unlink()
