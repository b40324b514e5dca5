"""The daemon loop: one `step` per turn wires the intake, job threads, heartbeats, recovery,
retention and metrics; `run` only waits, handles signals and shuts down. Decisions live in
pure modules (policy, status, takeover); the rooms the step calls live behind seams (the
intake, the report, the storage): docs/architecture.md draws the map.

Signals only set flags; the loop acts on them:
- SIGHUP: re-read the config file and apply what can change at run time (limits, retention,
  retries, max_jobs, log level, media roots, ...); log what changed and what needs a restart.
  Running jobs keep the settings they started with.
- First SIGTERM/SIGINT, the shutdown order (a second one skips the grace period):
  1. stop claiming; tell systemd STOPPING; heartbeat says "stopping"; release the jobs
     that wait for a slot here (claimed ahead, retries) so another daemon takes them now;
  2. let running jobs finish for up to `shutdown_grace_seconds` (cancels still honoured);
  3. stop what still runs: ffmpeg gets SIGTERM then SIGKILL, the job goes back to queued;
  4. release every job we still hold so another daemon takes it at once;
  5. stop the watcher, delete our heartbeat, exit 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

from spooler import __version__, spawn
from spooler.capabilities import capabilities
from spooler.clock import Clocks, ServerClock, read_clocks
from spooler.config import Settings, load_settings, reload_plan
from spooler.errors import ConfigError, JobError
from spooler.ffmpeg import find_ffmpeg
from spooler.ingest.watch import UploadWatcher
from spooler.intake import Intake, make_intake
from spooler.jobtable import JobTable
from spooler.layout import SpoolLayout
from spooler.logs import configure_logging
from spooler.metrics import StatusCache, update_metrics_file
from spooler.notify import SystemdNotifier
from spooler.pool import JobPool
from spooler.report import Reporter, StatusSink
from spooler.retention import Retention
from spooler.runner import AttemptEnv, SlotSignals
from spooler.s3.remotes import RemoteSources
from spooler.spool import ensure_layout
from spooler.storage import OutputStore, output_store
from spooler.webhooks import WebhookSink
from spooler.worker import WorkerIdentity, remove_heartbeat, write_heartbeat


@dataclass
class _Timers:
    """Monotonic times the periodic phases are next due."""

    scan: float = 0.0
    beat: float = 0.0
    recovery: float = 0.0
    metrics: float = 0.0
    retention: float = 0.0
    stop_started: float | None = None  # when the shutdown began


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        me: WorkerIdentity | None = None,
        config_file: Path | None = None,
        sinks: tuple[StatusSink, ...] = (),
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.me = me or WorkerIdentity.current(settings.worker_name)
        self.log = structlog.get_logger().bind(worker=self.me.id)
        self.notifier = SystemdNotifier()
        self.wake = threading.Event()
        self.table = JobTable(SpoolLayout(settings.spool_dir), settings.max_jobs)
        self.layout = self.table.layout
        # Webhooks (issue 15): a sink with its own threads; events outlive deleted folders.
        self.webhooks = WebhookSink(settings, self.layout)
        self.reporter = Reporter(self.layout, (*sinks, self.webhooks))
        self.outputs: OutputStore = output_store(settings, self.layout)
        # Remote sources (docs/s3.md): nothing is started until a job names an allowed one.
        self.remote_sources = RemoteSources()
        self.retention = Retention(settings, self.table, before_delete=self.webhooks.before_remove)
        # Where jobs come from (the inbox, or a BullMQ queue: docs/fleet.md).
        self.intake: Intake = make_intake(
            settings, self.table, self.reporter, self.retention, self.outputs, self.me, self.wake
        )
        # Proxy on upload (docs/ingest.md): None unless upload folders are configured.
        self.uploads = UploadWatcher.from_settings(settings, self.layout, self.wake)
        self.pool = JobPool(self.table, self.intake, self.reporter, self._env, self.wake)
        self.slot_signals = SlotSignals(self.wake.set, self.pool.slot_wanted.is_set)
        self.server_clock = ServerClock()
        self.timers = _Timers()
        self.started_at = read_clocks(self.server_clock).wall
        self._stop_requests = 0
        self._reload_requested = False
        self._ffmpeg: str | None = None
        self._metrics_cache = StatusCache()  # finished statuses are read once

    # -- plumbing --------------------------------------------------------------------------
    def ffmpeg(self) -> str:
        if self._ffmpeg is None:
            self._ffmpeg = find_ffmpeg(self.settings.ffmpeg_path)
        return self._ffmpeg

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only set flags: the loop does the logging and the work.
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stop_requests += 1
        self.wake.set()

    def request_stop(self) -> None:
        self._on_signal(signal.SIGTERM, None)

    def _env(self) -> AttemptEnv:
        return AttemptEnv(
            layout=self.layout,
            settings=self.settings,
            ffmpeg=self.ffmpeg,
            me=self.me,
            reporter=self.reporter,
            outputs=self.outputs,
            owns=self.intake.owns,
            remote_sources=self.remote_sources,
            slots=self.slot_signals,
        )

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        ensure_layout(self.layout)
        try:
            self.webhooks.start()
        except ConfigError as exc:
            self.log.error("webhooks_config_invalid", error=str(exc))
            return 2
        try:
            self.ffmpeg()
        except JobError as exc:
            # Every job would fail: refuse to start, so systemd or compose show the cause.
            self.log.error("ffmpeg_missing", error=exc.message)
            return 2
        spawn.warm_up()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, self._on_signal)
            # The read-lease probe (fsutil.open_for_writing_elsewhere) makes the kernel send
            # SIGIO if a writer opens the file during the probe; its default action kills.
            signal.signal(signal.SIGIO, signal.SIG_IGN)
        try:
            self.intake.start()
        except RuntimeError as exc:
            self.log.error("intake_failed", error=str(exc))
            return 2
        self._beat("running", read_clocks(self.server_clock))
        self.log.info(
            "daemon_started",
            version=__version__,
            spool=str(self.layout.root),
            max_jobs=self.settings.max_jobs,
            intake=self.intake.name,
            **self.intake.describe(),
        )
        listening = ", ".join(f"{k} {v}" for k, v in self.intake.describe().items())
        self.notifier.ready(f"watching {self.intake.name}: {listening}")
        self.timers.retention = read_clocks(self.server_clock).monotonic + 5.0
        while True:
            timeout = self.step(read_clocks(self.server_clock))
            if timeout is None:
                break
            self.wake.wait(timeout)
        self._shutdown()
        return 0

    def step(self, clocks: Clocks) -> float | None:
        """One turn of the loop at the given clocks; the seconds to wait before the next
        turn (a wake-up comes sooner), or None once shut down."""
        now = clocks.monotonic
        woke = self.wake.is_set()
        self.wake.clear()
        if self.pool.reap(clocks, stopping=bool(self._stop_requests)):
            woke = True  # a slot is free: take from the intake in this turn
        if self._reload_requested:
            self._reload_requested = False
            self._guarded(self._reload, clocks)
        stopping = self._stopping(clocks)
        if stopping and not self.table.running:
            return None
        if not stopping and self._watching(clocks):
            woke = True
        if now >= self.timers.beat:
            self._beat("stopping" if stopping else "running", clocks)
            self.timers.beat = now + self.settings.heartbeat_seconds
        self._guarded(self.pool.check_cancels, clocks)
        if self.table.unsaved:
            self._guarded(self.pool.flush_unsaved, clocks)
        if not stopping:
            self._guarded(self.pool.start_waiting, clocks)  # retries first: waited longest
            rescan = now >= self.timers.scan
            # While every slot encodes, every turn: an encode nearing its end may let the
            # inbox claim ahead (nothing wakes the loop for that); the intake's pass is
            # skipped when nothing calls for one (InboxIntake.take).
            if woke or rescan or (self.table.running and self.table.free_slots() <= 0):
                self._guarded(self._take if rescan else self._take_woken, clocks)
            if self.uploads is not None and (rescan or self.uploads.changed()):
                self._guarded(self.uploads.scan, clocks)
            self.pool.note_waiting(clocks)
            if rescan:
                self.timers.scan = now + self.settings.rescan_seconds
            if now >= self.timers.recovery:
                self._guarded(self._recover, clocks)
                self.timers.recovery = now + self.settings.heartbeat_seconds
            if self.settings.metrics_file is not None and now >= self.timers.metrics:
                self._guarded(self._write_metrics, clocks)
                self.timers.metrics = now + self.settings.metrics_interval_seconds
            if now >= self.timers.retention:
                self.timers.retention = now + self.settings.retention.interval_seconds
                self._guarded(self._retention, clocks)
        if self.table.running or self.table.waiting or stopping:
            return self.settings.tick_seconds
        return min(self.settings.rescan_seconds, self.settings.heartbeat_seconds)

    def _stopping(self, clocks: Clocks) -> bool:
        if not self._stop_requests:
            return False
        now = clocks.monotonic
        if self.timers.stop_started is None:
            self.timers.stop_started = now
            self.log.info(
                "shutdown_started",
                running=sorted(self.table.running),
                grace_seconds=self.settings.shutdown_grace_seconds,
            )
            self.notifier.stopping("draining running jobs")
            self.timers.beat = now  # say "stopping" at once
            # What waits for a slot here (claimed ahead, a retry, an adopted job) will not
            # start: another daemon may take it now, not after the drain.
            self._guarded(self._release_waiting, clocks)
        grace_over = now - self.timers.stop_started >= self.settings.shutdown_grace_seconds
        if self._stop_requests > 1 or grace_over:
            self.pool.stop_all()
        return True

    def _watching(self, clocks: Clocks) -> bool:
        """The watcher checked (restarted if it died); a failure waits for the next turn."""
        try:
            return self.intake.check(clocks)
        except Exception:
            self.log.exception("loop_phase_failed", phase="watcher_check")
            return False

    def _guarded(self, phase: Callable[[Clocks], object], clocks: Clocks) -> None:
        """One phase of the loop; a failure (a full or read-only disk, a vanished folder)
        is logged and retried on the next turn, never allowed to stop the daemon."""
        try:
            phase(clocks)
        except Exception:
            name = getattr(phase, "__name__", type(phase).__name__)
            self.log.exception("loop_phase_failed", phase=name.lstrip("_"))

    def _write_metrics(self, clocks: Clocks) -> None:
        assert self.settings.metrics_file is not None
        update_metrics_file(self.layout, self.settings.metrics_file, self._metrics_cache)

    def _beat(self, state: str, clocks: Clocks) -> None:
        try:
            stamped = write_heartbeat(
                self.layout,
                self.me,
                started_at=self.started_at,
                now=clocks.wall,
                running=sorted(self.table.running),
                max_jobs=self.settings.max_jobs,
                state=state,
                heartbeat_seconds=self.settings.heartbeat_seconds,
                lease_seconds=self.settings.lease_seconds,
                capabilities=capabilities(),
            )
        except OSError as exc:
            self.log.error("heartbeat_failed", error=str(exc))
            return
        self.server_clock.stamp(stamped, clocks.monotonic)
        self.notifier.watchdog()
        self.notifier.status(
            f"{len(self.table.running)} running, {len(self.table.waiting)} waiting, "
            f"{self.pool.started_count} started since start"
        )

    def _reload(self, clocks: Clocks) -> None:
        """SIGHUP: apply what can change while running; the rest waits for a restart."""
        try:
            fresh = load_settings(self.config_file)
        except ConfigError as exc:
            self.log.error("config_reload_failed", error=str(exc), kept="the running settings")
            return
        plan = reload_plan(self.settings, fresh)
        self.settings = plan.settings
        self.intake.settings = self.retention.settings = plan.settings
        self.table.max_jobs = plan.settings.max_jobs
        configure_logging(self.settings.log_format, self.settings.log_level)
        self.log.info("config_reloaded", applied=plan.applied, needs_restart=plan.needs_restart)
        self.wake.set()

    def _release_waiting(self, clocks: Clocks | None = None) -> None:
        """Release each waiting job; one that fails stays for the next try (at exit)."""
        for job_id in list(self.table.waiting):
            try:
                self.intake.release(job_id)
            except Exception:
                self.log.exception("release_failed", job_id=job_id)
                continue
            del self.table.waiting[job_id]

    def _shutdown(self) -> None:
        self._release_waiting()
        self.intake.close()
        if self.uploads is not None:
            self.uploads.stop()
        remove_heartbeat(self.layout, self.me)
        self.webhooks.stop()  # pending deliveries stay in outbox/ for the next start
        self.remote_sources.shutdown()  # no job runs any more: nothing reads through it
        # The spawn helper ends and is reaped: the daemon's own CPU accounting (its
        # RUSAGE_CHILDREN, what a supervisor or a bench reads) then includes every ffmpeg.
        spawn.shutdown()
        self.log.info("daemon_stopped")

    def _take(self, clocks: Clocks, *, rescan: bool = True) -> None:
        for handle in self.intake.take(clocks, rescan=rescan):
            self.pool.queue_or_start(handle, clocks)

    def _take_woken(self, clocks: Clocks) -> None:
        """Before the rescan is due: the intake may skip its pass (InboxIntake.take)."""
        self._take(clocks, rescan=False)

    def _recover(self, clocks: Clocks) -> None:
        for handle in self.intake.housekeeping(clocks):
            self.table.waiting[handle.job_id] = handle

    def _retention(self, clocks: Clocks) -> None:
        if self.retention.run(clocks):  # out of time with work left: again soon
            self.timers.retention = clocks.monotonic + self.settings.heartbeat_seconds
