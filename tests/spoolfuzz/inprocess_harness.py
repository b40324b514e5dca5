"""Run one hostile spool state in process: the daemon's loop driven through `Daemon.step`
with chosen clocks, so that leases, settle times, stale staging folders and retention
(days) pass in one jump instead of in real time, and no interpreter starts per state.

The same checks as the process harness where they apply (spool_harness.py), with the
same signatures, so one list of known defects serves both:

1. the state is written, the canary watched; the daemon turns (live entries are written
   after its first turn); a good job must succeed within `good_timeout` real seconds;
2. then every clock jumps by 30 days (monotonic, wall and file server), the loop turns
   again (retention, leases, settle times, orphan markers, stale staging all due), and a
   second good job must succeed as well;
3. a turn that takes longer than the lease is a stale heartbeat (the loop thread writes
   it); one that never returns is a wedged loop: the harness opens the spool's FIFOs for
   writing to unblock it, and reports it;
4. the spool settles (inbox, claims, rejected/ error files), no error-level log event, and
   nothing in the canary was touched.

What only a process shows (start-up and restart, signals, the CLI, memory limits: huge
sparse files are left out here) stays with spool_harness.run_state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from canary import Canary
from spool_harness import (
    GOOD_ID,
    Defect,
    Outcome,
    _canary_defects,
    _check_settled,
    _submit,
    normalise,
)
from spool_states import GOOD_JOB, SpoolState, materialize, resolve_placeholders

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.daemon import Daemon
from spooler.fsutil import leases_work
from spooler.spool import ensure_layout
from spooler.status import utcnow
from spooler.worker import WorkerIdentity

STEP_TIMEOUT = 5.0  # real seconds a turn may take before the loop counts as wedged


class _Clock:
    """Real time plus a jump applied to every clock at once."""

    def __init__(self) -> None:
        self.offset = 0.0  # seconds added to the monotonic, wall and file server clocks

    def now(self) -> Clocks:
        return Clocks(
            monotonic=time.monotonic() + self.offset,
            wall=utcnow() + timedelta(seconds=self.offset),
            server=time.time() + self.offset,
        )


class _LogCollector:
    """structlog configured to keep error-level events (with their traceback) in a list."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self._saved: dict[str, Any] = {}

    def _collect(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        if event.get("level") in ("error", "critical"):
            self.errors.append(dict(event))
        raise structlog.DropEvent

    def __enter__(self) -> _LogCollector:
        self._saved = structlog.get_config()
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.format_exc_info,
                self._collect,
            ],
            cache_logger_on_first_use=False,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        structlog.configure(**self._saved)


def settings_for(state: SpoolState, spool: Path, media: Path) -> Settings:
    return Settings(
        spool_dir=spool,
        media_roots=[media],
        max_jobs=state.settings.max_jobs,
        heartbeat_seconds=state.settings.heartbeat,
        lease_seconds=state.settings.lease,
        settle_seconds=1.0,
        rescan_seconds=0.5,
        tick_seconds=0.05,
        status_interval_seconds=0.2,
        kill_grace_seconds=1.0,
        shutdown_grace_seconds=2.0,
        ffmpeg_nice=0,
        watch_mode="polling",  # no inotify instance per state (the canary has one)
    )


def run_state_in_process(
    state: SpoolState,
    workdir: Path,
    *,
    good_timeout: float = 6.0,
    step_timeout: float = STEP_TIMEOUT,
) -> Outcome:
    started = time.monotonic()
    outcome = Outcome(state)
    spool, media = workdir / "spool", workdir / "media"
    media.mkdir(parents=True)
    canary = Canary(workdir / "canary")
    canary.build()
    # Huge sparse files need the process harness's address-space limit.
    entries = tuple(
        e for e in resolve_placeholders(state.entries, canary.root) if e.node != "sparse"
    )
    outcome.skipped += materialize(tuple(e for e in entries if not e.live), spool, canary.root)
    canary.start()
    clock = _Clock()
    limit = max(state.settings.lease, 2.5)
    with _LogCollector() as logs:
        daemon = Daemon(settings_for(state, spool, media), me=WorkerIdentity.current("fuzz-inproc"))
        ensure_layout(daemon.layout)
        daemon.intake.use_leases = leases_work(daemon.layout.inbox)  # as `run` decides
        turner = _Turner(daemon, clock, spool, limit, outcome, step_timeout)
        try:
            turner.turn()
            outcome.skipped += materialize(tuple(e for e in entries if e.live), spool, canary.root)
            _submit(spool, GOOD_ID, json.dumps(GOOD_JOB).encode())
            outcome.defects += turner.until_done(GOOD_ID, good_timeout)
            if not turner.wedged:
                # Every lease, settle time, orphan marker and retention period is over.
                clock.offset += 30 * 86400
                second = f"{GOOD_ID}-2"
                _submit(spool, second, json.dumps(GOOD_JOB).encode())
                outcome.defects += [
                    Defect(d.signature + ":after_time_jump", d.detail)
                    for d in turner.until_done(second, good_timeout)
                ]
                for _ in range(3):
                    turner.turn()

                def later() -> None:  # the next rescan is due at once
                    clock.offset += daemon.settings.rescan_seconds
                    turner.turn()

                deadline = time.monotonic() + 2.0
                outcome.defects += _check_settled(spool, daemon.me.id, deadline, wait=later)
        finally:
            _stop(daemon, clock, wedged=turner.wedged)
    touches = canary.drain()
    canary.stop()
    touches += canary.changed_files()
    outcome.defects += _canary_defects(touches)
    for event in logs.errors:
        exception = str(event.get("exception") or event.get("error") or "")
        last = exception.strip().splitlines()[-1] if exception.strip() else ""
        signature = normalise(f"log:{event.get('event')}:{event.get('phase', '')}:{last}")
        if signature not in outcome.signatures:
            outcome.defects.append(Defect(signature, exception[-1500:]))
    outcome.seconds = time.monotonic() - started
    return outcome


class _Turner:
    """Turns the loop in a helper thread, so a turn that blocks cannot block the fuzzer."""

    def __init__(
        self,
        daemon: Daemon,
        clock: _Clock,
        spool: Path,
        limit: float,
        outcome: Outcome,
        step_timeout: float,
    ) -> None:
        self.daemon, self.clock, self.spool = daemon, clock, spool
        self.limit, self.outcome, self.step_timeout = limit, outcome, step_timeout
        self.wedged = False
        self.slowest = 0.0

    def turn(self) -> float:
        if self.wedged:
            return 0.05
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["wait"] = self.daemon.step(self.clock.now())
            except BaseException as exc:  # a step must never raise: report it
                result["error"] = exc

        began = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(self.step_timeout)
        if thread.is_alive():
            self.wedged = True
            where = (
                "".join(traceback.format_stack(_frame_of(thread))[-3:]) if _frame_of(thread) else ""
            )
            self.outcome.defects.append(
                Defect(
                    "heartbeat_stale", f"a loop turn blocked > {self.step_timeout} s at\n{where}"
                )
            )
            _unblock_fifos(self.spool)
            thread.join(2.0)
            return 0.05
        took = time.monotonic() - began
        if took > self.limit:
            self.outcome.defects.append(
                Defect("heartbeat_stale", f"a loop turn took {took:.1f} s (lease {self.limit})")
            )
        if "error" in result:
            exc = result["error"]
            self.outcome.defects.append(
                Defect(
                    normalise(f"step_raised:{type(exc).__name__}: {exc}"),
                    "".join(traceback.format_exception(exc))[-1500:],
                )
            )
            return 0.05
        wait = result.get("wait")
        return 0.05 if wait is None else min(wait, 0.05)

    def until_done(self, job_id: str, timeout: float) -> list[Defect]:
        layout = self.daemon.layout
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline and not self.wedged:
            time.sleep(self.turn())
            try:
                status = json.loads(layout.status_file(job_id).read_bytes())
            except (OSError, ValueError):
                status = None
            if status is not None and status.get("state") in (
                "succeeded",
                "failed",
                "cancelled",
                "rejected",
            ):
                break
        if status is not None and status.get("state") == "succeeded":
            return []
        if status is None:
            where = "still in inbox/" if layout.inbox_job(job_id).exists() else "nowhere"
            return [Defect(f"good_job_not_done:{where}", f"{job_id}: no status after {timeout} s")]
        error = status.get("error") or {}
        return [
            Defect(
                f"good_job_{status.get('state')}:{error.get('code', '')}",
                f"{job_id}: {json.dumps(error)[:300]}",
            )
        ]


def _frame_of(thread: threading.Thread) -> Any:
    return sys._current_frames().get(thread.ident or -1)


def _unblock_fifos(spool: Path) -> None:
    """A reader blocked in open() on a FIFO returns once a writer opens it. find, not
    os.walk: a state may hold folders thousands deep (os.walk recurses per level)."""
    found = subprocess.run(
        ["find", str(spool), "-type", "p", "-print0"],
        capture_output=True,
        check=False,
    ).stdout
    for path in filter(None, found.split(b"\0")):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            continue


def _stop(daemon: Daemon, clock: _Clock, *, wedged: bool) -> None:
    daemon.request_stop()
    daemon.request_stop()  # a second request: stop running jobs now
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline and not wedged:
            if daemon.step(clock.now()) is None:
                break
            time.sleep(0.02)
    finally:
        daemon.intake.close()
