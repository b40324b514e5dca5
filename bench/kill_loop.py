"""Kill loop drill: daemons on one spool, one of them SIGKILLed at random moments and
restarted, while short jobs flow. Then `spooler audit` counts what happened.

    .venv/bin/python bench/kill_loop.py --jobs 300 --kills 50

Used by tests/test_faults.py (CI size) and bench/soak.py (long runs).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spooler.audit import audit_spool, format_report
from spooler.layout import SpoolLayout

DRILL_SETTINGS = {
    "SPOOLER_RESCAN_SECONDS": "0.5",
    "SPOOLER_HEARTBEAT_SECONDS": "0.2",  # fresh jobsRunning, so kills land mid-job
    "SPOOLER_LEASE_SECONDS": "3",
    "SPOOLER_TICK_SECONDS": "0.05",
    "SPOOLER_KILL_GRACE_SECONDS": "1",
    "SPOOLER_SHUTDOWN_GRACE_SECONDS": "5",
    "SPOOLER_RETRY__BACKOFF_BASE_SECONDS": "0.2",
    "SPOOLER_RETRY__BACKOFF_MAX_SECONDS": "1",
    "SPOOLER_RETRY__MAX_ATTEMPTS": "20",
    "SPOOLER_LOG_FORMAT": "json",
    "SPOOLER_FFMPEG_NICE": "0",
    "SPOOLER_MAX_JOBS": "2",
}


@dataclass
class Drill:
    root: Path
    daemons: int
    seed: int
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: int = 0
    starts: int = 0
    interrupted: collections.Counter[str] = field(default_factory=collections.Counter)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
        env.update(DRILL_SETTINGS)
        env["SPOOLER_SPOOL_DIR"] = str(self.root)
        env["SPOOLER_MEDIA_ROOTS"] = json.dumps([str(self.root.parent / "media")])
        return env

    def start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        log = (self.logs / f"daemon-{self.starts}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "spooler", "run"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return proc

    def submit(self, job_id: str, rng: random.Random, *, bad: bool = False) -> None:
        # Played at real time, so that a kill lands in the middle of running jobs.
        job = {
            "kind": "testpattern",
            "durationSeconds": round(rng.uniform(0.2, 1.0), 2),
            "width": 16,
            "height": 16,
            "fps": 10,
            "realtime": True,
        }
        raw = json.dumps(job).encode()
        inbox = SpoolLayout(self.root).inbox
        tmp = inbox / f".{job_id}.tmp"
        tmp.write_bytes(mutate(raw, rng) if bad else raw)
        tmp.rename(inbox / f"{job_id}.json")


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """A hostile variant of a valid job file: what a buggy or malicious client might write."""
    choice = rng.randrange(9)
    if choice == 0:
        return raw[: rng.randrange(len(raw))]  # truncated
    if choice == 1:
        data = bytearray(raw)
        data[rng.randrange(len(data))] = rng.randrange(256)  # one corrupt byte
        return bytes(data)
    if choice == 2:
        return raw.replace(b'"width": 16', b'"width": NaN')
    if choice == 3:
        return raw.replace(b"{", b'{"kind": "testpattern", ', 1)  # duplicate key
    if choice == 4:
        return raw.replace(b"}", b', "unexpected": {"x": 1}}')
    if choice == 5:
        return raw.replace(b'"height": 16', b'"height": "16; rm -rf /"')
    if choice == 6:
        return b"[" * 20_000 + b"]" * 20_000
    if choice == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    return raw.replace(b'"fps": 10', b'"fps": 1e999')


def run_kill_loop(
    root: Path,
    *,
    jobs: int,
    kills: int,
    daemons: int = 2,
    seed: int = 1,
    timeout: float = 600,
    bad_inputs: int = 0,
) -> dict[str, Any]:
    """Run the drill; return the audit report plus the drill's own counts."""
    rng = random.Random(seed)
    logs = root.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for sub in ("inbox", "jobs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    drill = Drill(root, daemons, seed, logs)
    started = time.monotonic()
    good = [f"job-{i:05d}" for i in range(jobs)]
    bad = {f"bad-{i:05d}" for i in range(bad_inputs)}
    ids = good + sorted(bad)
    pending = list(ids)
    rng.shuffle(pending)
    try:
        drill.procs = [drill.start() for _ in range(daemons)]
        while drill.kills < kills or pending:
            # Keep a trickle of work arriving while the victim dies and comes back.
            for _ in range(min(len(pending), rng.randint(1, 12))):
                job_id = pending.pop(0)
                drill.submit(job_id, rng, bad=job_id in bad)
            # Kill a daemon at a random moment while it runs a job (whichever is busy:
            # the one just restarted often finds the inbox drained by the other).
            # A job interrupted three times is spared: otherwise one unlucky long job
            # exhausts its attempts and ends failed (worker_lost), which proves little.
            busy = _wait_busy(
                root, [p.pid for p in drill.procs], timeout=3.0, spare=drill.interrupted
            )
            time.sleep(rng.uniform(0.0, 0.25))
            if drill.kills < kills:
                index = busy if busy is not None else 0
                victim = drill.procs[index]
                drill.interrupted.update(_running(root, victim.pid))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                drill.kills += 1
                drill.procs[index] = drill.start()
            if time.monotonic() - started > timeout:
                raise TimeoutError("kill loop did not finish in time")
        _wait_final(root, ids, deadline=started + timeout)
    finally:
        for proc in drill.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in drill.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    layout = SpoolLayout(root)
    report = audit_spool(layout)
    result = report.to_json()
    result.update(
        kills=drill.kills,
        daemon_starts=drill.starts,
        submitted=len(ids),
        bad_inputs=len(bad),
        good_states=sorted({str(_state(layout, i)) for i in good}),
        lost=len(ids) - report.jobs + len(report.no_status),
        seconds=round(time.monotonic() - started, 1),
    )
    result["text"] = format_report(report)
    return result


def _running(root: Path, pid: int) -> list[str]:
    """The jobs a daemon's heartbeat says it is running."""
    for beat in (root / "workers").glob("*.json"):
        try:
            data = json.loads(beat.read_text())
        except (OSError, ValueError):
            continue
        if data.get("pid") == pid:
            return list(data.get("jobsRunning") or [])
    return []


def _wait_busy(
    root: Path, pids: list[int], timeout: float, spare: collections.Counter[str]
) -> int | None:
    """Index in `pids` of a daemon running a job not yet interrupted 3 times, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index, pid in enumerate(pids):
            running = _running(root, pid)
            if running and all(spare[job] < 3 for job in running):
                return index
        time.sleep(0.02)
    return None


def _state(layout: SpoolLayout, job_id: str) -> str | None:
    try:
        state: str = json.loads(layout.status_file(job_id).read_text())["state"]
    except (FileNotFoundError, ValueError):
        return None
    return state


def _wait_final(root: Path, ids: list[str], deadline: float) -> None:
    layout = SpoolLayout(root)
    remaining = set(ids)
    while remaining and time.monotonic() < deadline:
        for job_id in list(remaining):
            if _state(layout, job_id) in ("succeeded", "failed", "cancelled", "rejected"):
                remaining.discard(job_id)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--daemons", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bad-inputs", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spooler-killloop-") as scratch:
        result = run_kill_loop(
            Path(scratch) / "spool",
            jobs=args.jobs,
            kills=args.kills,
            daemons=args.daemons,
            seed=args.seed,
            bad_inputs=args.bad_inputs,
        )
    print(result.pop("text"))
    keys = ("submitted", "bad_inputs", "kills", "lost", "seconds", "by_state", "good_states")
    print(json.dumps({k: result[k] for k in keys}))
    sys.exit(
        0 if result["ok"] and result["lost"] == 0 and result["good_states"] == ["succeeded"] else 1
    )


if __name__ == "__main__":
    main()
