"""Run one hostile spool state against a real daemon and list the defects it shows.

For each state, on a fresh spool beside a fresh canary tree:

1. the state's entries are written, the canary is watched (inotify), a real `spooler run`
   starts on the spool (so restart and recovery paths meet the state), and the state's
   `live` entries are written while it runs;
2. a good testpattern job is submitted: it must succeed within `good_timeout` seconds;
3. the daemon's heartbeat is sampled throughout: it must never be older than its lease
   (at least 2.5 s);
4. `ls`, `ls --json`, `status` (the good job and every job id of the state), `metrics`,
   `audit` must return within `cli_timeout` without a traceback;
5. the spool settles: inbox entries are claimed or moved aside, claims of dead workers are
   recovered, every file the daemon moved into rejected/ has its .error.json;
6. the daemon is alive, its log holds no error-level event (`loop_phase_failed` and the
   like) and no traceback, it stops on SIGTERM;
7. nothing in the canary was opened, read, written, moved or deleted.

Each failed check is a `Defect` with a short signature (what failed, normalised so that
one cause gives one signature) and the detail a maintainer needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canary import Canary
from spool_states import DEAD, GOOD_JOB, SpoolState, materialize, resolve_placeholders
from support import FAST_SETTINGS

from spooler.layout import EntryKind, SpoolLayout, classify_inbox_name

GOOD_ID = "fuzz-good"
# Reading a sparse HUGE file whole fails at once under this limit instead of eating RAM.
MEMORY_LIMIT = 3 * 1024**3
PROBE = Path(__file__).with_name("cli_probe.py")
_STAMPED = re.compile(rb"^\d{8}T\d{6}Z-[0-9a-f]{6}-")


@dataclass(frozen=True)
class Defect:
    signature: str
    detail: str


@dataclass
class Outcome:
    state: SpoolState
    defects: list[Defect] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    log_tail: str = ""

    @property
    def signatures(self) -> set[str]:
        return {d.signature for d in self.defects}


def normalise(text: str) -> str:
    """One cause, one signature: the first line, without names, numbers and addresses
    (an errno is kept: it names the cause)."""
    text = text.strip().splitlines()[0] if text.strip() else ""
    text = re.sub(r"\\u[0-9a-f]{4}|\\x[0-9a-f]{2}", "", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text)
    text = re.sub(r"0x[0-9a-f]+|\b(?<!Errno )\d+\b", "N", text)
    return text.strip()[:140]


def run_state(
    state: SpoolState,
    workdir: Path,
    *,
    good_timeout: float = 6.0,
    dwell: float = 0.0,
    cli_timeout: float = 6.0,
) -> Outcome:
    """`workdir` must be empty; it is left in place (the caller removes it)."""
    started = time.monotonic()
    outcome = Outcome(state)
    spool, media = workdir / "spool", workdir / "media"
    media.mkdir(parents=True)
    canary = Canary(workdir / "canary")
    canary.build()
    entries = resolve_placeholders(state.entries, canary.root)
    outcome.skipped += materialize(tuple(e for e in entries if not e.live), spool, canary.root)
    canary.start()
    env = _env(state, spool, media)
    log_path = workdir / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spooler", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    _limit_memory(proc.pid)
    sampler: _HeartbeatSampler | None = None
    try:
        worker = _wait_started(proc, log_path, timeout=10.0)
        if worker is None:
            outcome.defects.append(Defect("daemon_did_not_start", _tail(log_path)))
            return outcome
        sampler = _HeartbeatSampler(SpoolLayout(spool).heartbeat_file(worker))
        sampler.start()
        # Stale = older than the lease (another daemon would take the jobs over); 2.5 s at
        # least, so a loaded CI machine is not mistaken for a wedged loop.
        limit = max(state.settings.lease, 2.5)
        outcome.skipped += materialize(tuple(e for e in entries if e.live), spool, canary.root)
        _submit(spool, GOOD_ID, json.dumps(GOOD_JOB).encode())
        outcome.defects += _check_good_job(spool, good_timeout, lambda: sampler.age() > limit)
        if dwell:
            time.sleep(dwell)
        outcome.defects += _check_cli(env, state, cli_timeout)
        settle = 0.0 if sampler.age() > limit else 2.5  # a wedged loop settles nothing
        outcome.defects += _check_settled(spool, worker, deadline=time.monotonic() + settle)
        sampler.stop()
        if sampler.max_age > limit:
            outcome.defects.append(
                Defect(
                    "heartbeat_stale",
                    f"heartbeat was {sampler.max_age:.1f} s old (limit {limit:.1f} s)",
                )
            )
        if proc.poll() is not None:
            outcome.defects.append(Defect("daemon_exited", f"exit code {proc.returncode}"))
        elif sampler.age() <= limit:  # a wedged loop (already reported) cannot stop either
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=float(FAST_SETTINGS["SPOOLER_SHUTDOWN_GRACE_SECONDS"]) + 3)
            except subprocess.TimeoutExpired:
                outcome.defects.append(Defect("daemon_did_not_stop", "SIGTERM ignored"))
    finally:
        if sampler is not None:
            sampler.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        touches = canary.drain()
        canary.stop()
        touches += canary.changed_files()
        outcome.defects += _canary_defects(touches)
        outcome.defects += _log_defects(log_path)
        outcome.log_tail = _tail(log_path)
        outcome.seconds = time.monotonic() - started
    return outcome


def cleanup(workdir: Path) -> None:
    """Remove a state's work folder. Not shutil.rmtree: it recurses once per level, and a
    state may hold folders 1,200 deep (a RecursionError here would also break pytest's own
    clean-up of its temporary folders in a later session). rm uses fts: no recursion."""
    for _ in range(20):  # a wedged in-process turn may still be working in there
        subprocess.run(["rm", "-rf", "--", str(workdir)], check=False, stderr=subprocess.DEVNULL)
        if not workdir.exists():
            return
        time.sleep(0.5)


# -- the daemon -----------------------------------------------------------------------------
def _env(state: SpoolState, spool: Path, media: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env.update(FAST_SETTINGS)
    env.update(state.settings.env())
    env["SPOOLER_LOG_LEVEL"] = "info"
    env["SPOOLER_SPOOL_DIR"] = str(spool)
    env["SPOOLER_MEDIA_ROOTS"] = json.dumps([str(media)])
    return env


def _limit_memory(pid: int) -> None:
    """Set right after the fork (before the interpreter has even imported spooler);
    ffmpeg inherits it, and needs far less."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        resource.prlimit(pid, resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _events(log_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _wait_started(proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for event in _events(log_path):
            if event.get("event") == "daemon_started":
                return str(event["worker"])
        time.sleep(0.02)
    return None


def _tail(log_path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _HeartbeatSampler(threading.Thread):
    """The age of the daemon's heartbeat (mtime against this host's clock), every 50 ms."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.max_age = 0.0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                age = time.time() - os.lstat(self.path).st_mtime
            except OSError:
                continue  # between its unlink-free atomic renames this never happens
            self.max_age = max(self.max_age, age)

    def age(self) -> float:
        try:
            return time.time() - os.lstat(self.path).st_mtime
        except OSError:
            return float("inf")

    def stop(self) -> None:
        self._stop.set()


# -- checks ---------------------------------------------------------------------------------
def _submit(spool: Path, job_id: str, data: bytes) -> None:
    inbox = spool / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{job_id}.json.tmp"
    tmp.write_bytes(data)
    tmp.rename(inbox / f"{job_id}.json")


def _check_good_job(spool: Path, timeout: float, wedged: Callable[[], bool]) -> list[Defect]:
    """Wait for the good job; give up early once the loop is known to be stuck."""
    layout = SpoolLayout(spool)
    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline and not wedged():
        try:
            status = json.loads(layout.status_file(GOOD_ID).read_bytes())
        except (OSError, ValueError):
            status = None
        if status is not None and status.get("state") in (
            "succeeded",
            "failed",
            "cancelled",
            "rejected",
        ):
            break
        time.sleep(0.03)
    if status is not None and status.get("state") == "succeeded":
        return []
    if status is None:
        where = (
            "still in inbox/"
            if layout.inbox_job(GOOD_ID).exists()
            else "in claims/"
            if any(n.startswith(f"{GOOD_ID}.") for n in os.listdir(layout.claims))
            else "nowhere"
        )
        return [Defect(f"good_job_not_done:{where}", f"no status after {timeout} s")]
    error = status.get("error") or {}
    return [
        Defect(
            f"good_job_{status.get('state')}:{error.get('code', '')}",
            f"after {timeout} s: {json.dumps(error)[:300]}",
        )
    ]


def _check_cli(env: dict[str, str], state: SpoolState, timeout: float) -> list[Defect]:
    commands = [["ls"], ["ls", "--json"], ["status", GOOD_ID], ["metrics"], ["audit"]]
    commands += [["status", "--json", job_id] for job_id in state.job_ids()]
    limit = timeout + 15  # the interpreter's start-up, on a loaded machine
    proc = subprocess.Popen(
        [sys.executable, str(PROBE), json.dumps(commands), str(timeout)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _limit_memory(proc.pid)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    defects = []
    results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    if len(results) != len(commands):
        return [Defect("cli_probe_broken", err.decode(errors="replace")[-500:])]
    for result in results:
        name = " ".join(a for a in result["args"][:2] if a != "--json")
        name = name.split()[0] if name.startswith("status") else name
        if result["result"] == "timeout":
            defects.append(Defect(f"cli:{name}:timeout", f"{result['args']} > {timeout} s"))
        elif result["result"] == "crash":
            defects.append(
                Defect(
                    f"cli:{name}:{normalise(result['error'])}",
                    f"{result['args']}: {result['error']}\n{result.get('where', '')}",
                )
            )
        elif result["args"][0] in ("ls", "metrics") and result["exit"] != 0:
            defects.append(Defect(f"cli:{name}:exit{result['exit']}", str(result["args"])))
    return defects


def _check_settled(
    spool: Path,
    worker: str,
    deadline: float,
    wait: Callable[[], None] = lambda: time.sleep(0.1),
) -> list[Defect]:
    """Give the daemon until `deadline` to drain what it must drain (`wait` lets it work:
    a sleep, or loop turns in process). What is left then is looked at again after one
    more wait: a move caught half-way (renamed, its .error.json not yet written) is not a
    defect. Strays moved at a bounded rate are fine as long as their number went down."""
    layout = SpoolLayout(spool)
    first = leftovers = _unsettled(layout, worker)
    while leftovers and time.monotonic() < deadline:
        wait()
        leftovers = _unsettled(layout, worker)
    if leftovers:
        wait()
        again = {d.detail for d in _unsettled(layout, worker)}
        leftovers = [d for d in leftovers if d.detail in again]
    strays = [d for d in leftovers if d.signature.startswith("inbox_entry_stuck:stray:")]
    if strays and len(strays) < sum(
        d.signature.startswith("inbox_entry_stuck:stray:") for d in first
    ):
        leftovers = [d for d in leftovers if d not in strays]  # draining: progress
    return leftovers


def _unsettled(layout: SpoolLayout, worker: str) -> list[Defect]:
    """Inbox entries neither claimed nor moved aside, claims of dead workers, moved files
    without their .error.json."""
    leftovers: list[Defect] = []
    for raw in _listdir(layout.inbox):
        entry = classify_inbox_name(os.fsdecode(raw))
        if entry.kind in (EntryKind.JOB, EntryKind.STRAY):
            leftovers.append(
                Defect(
                    f"inbox_entry_stuck:{entry.kind.value}:{_node(layout.inbox, raw)}",
                    f"inbox/{raw!r} neither claimed nor moved aside",
                )
            )
    for raw in _listdir(layout.claims):
        parts = raw.split(b".")
        if (
            len(parts) == 3
            and parts[2] == b"json"
            and parts[1].decode(errors="replace") in (DEAD, "released", worker)
        ):
            leftovers.append(
                Defect(
                    f"claim_not_recovered:{_node(layout.claims, raw)}",
                    f"claims/{raw!r} of a dead worker is still there",
                )
            )
    names = set(_listdir(layout.rejected))
    for raw in names:
        if (
            _STAMPED.match(raw)
            and not raw.startswith(b"20000101T")
            and not raw.endswith(b".error.json")
            and raw + b".error.json" not in names
        ):
            leftovers.append(
                Defect(
                    "rejected_without_error_file",
                    f"rejected/{raw!r} has no .error.json",
                )
            )
    return leftovers


def _listdir(directory: Path) -> list[bytes]:
    try:
        return os.listdir(os.fsencode(directory))
    except OSError:
        return []


def _node(directory: Path, raw: bytes) -> str:
    try:
        mode = os.lstat(os.path.join(os.fsencode(directory), raw)).st_mode
    except OSError:
        return "gone"
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISREG, "file"),
    ):
        if test(mode):
            return name
    return "other"


def _canary_defects(touches: list[Any]) -> list[Defect]:
    by_signature: dict[str, list[str]] = {}
    for touch in touches:
        by_signature.setdefault(touch.signature, []).append(touch.name)
    return [
        Defect(signature, f"{len(names)} event(s) on the canary tree outside the spool")
        for signature, names in sorted(by_signature.items())
    ]


def _log_defects(log_path: Path) -> list[Defect]:
    defects: dict[str, Defect] = {}
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    for event in _events(log_path):
        if event.get("level") not in ("error", "critical"):
            continue
        exception = str(event.get("exception") or event.get("error") or "")
        last = exception.strip().splitlines()[-1] if exception.strip() else ""
        signature = normalise(f"log:{event.get('event')}:{event.get('phase', '')}:{last}")
        defects.setdefault(signature, Defect(signature, exception[-1500:]))
    # Tracebacks outside structlog: a thread that died (threading's excepthook).
    for block in re.split(r"\n(?=\S)", text):
        if "Traceback (most recent call last)" in block and not block.startswith("{"):
            last = block.strip().splitlines()[-1]
            signature = normalise(f"stderr_traceback:{last}")
            defects.setdefault(signature, Defect(signature, block[-1500:]))
    return list(defects.values())
