"""Inbox watching with watchdog, as hints only: an event just wakes the daemon loop,
which rescans. A periodic rescan (in the daemon) is the source of truth.

Traps handled here: an atomic writer's rename arrives as a *moved* event (so no event that
can bring something in is filtered out: only those that cannot, `QUIET_EVENTS`); an
exception in a handler kills watchdog's dispatcher thread silently (`healthy()` notices a
dead observer so the daemon restarts it and rescans); inotify cannot see writes from other
hosts over NFS/SMB (use watch_mode "polling").
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Literal

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

WatchMode = Literal["auto", "inotify", "polling"]


def _no_move_pairing_delay() -> None:
    """Every claim renames a file out of the inbox; watchdog holds such an unpaired
    IN_MOVED_FROM for 0.5 s at the head of its queue (to pair it with an IN_MOVED_TO),
    delaying every later inbox event behind it: the claim latency of the next job. Events
    are only hints to us, so pairing is worth nothing: turn the delay off. (A private class
    attribute, hence the pin on watchdog < 8 in pyproject.toml.)"""
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # another watchdog layout: keep its default, the rescan still works
        return
    InotifyMoveEventGrouper.delay = 0.0


# Events that cannot mean new work, so they do not wake the loop: a file opened or closed
# unwritten (the loop's own readiness probes and priority reads: each woke the loop for
# another pass, which probed again, for as long as a burst of files was settling), a file
# deleted or moved out (every claim moves one out), and the inbox folder's own "modified"
# (it comes with one of the file events above or below).
QUIET_EVENTS = frozenset({"opened", "closed_no_write", "deleted"})


def wakes(event: FileSystemEvent) -> bool:
    if event.event_type in QUIET_EVENTS:
        return False
    return not (event.is_directory and event.event_type == "modified")


class _WakeHandler(FileSystemEventHandler):
    def __init__(self, wake: threading.Event, changed: threading.Event) -> None:
        self._wake = wake
        self._changed = changed
        # Fault injection for tests: crash the dispatcher after N events, as a buggy
        # handler would. Real watchdog threads die silently on handler exceptions.
        crash_after = os.environ.get("SPOOLER_FAULT_OBSERVER_CRASH_AFTER")
        self._crash_after = int(crash_after) if crash_after else None
        self._seen = 0

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._seen += 1
        if self._crash_after is not None and self._seen > self._crash_after:
            self._crash_after = None  # only the first observer crashes
            os.environ.pop("SPOOLER_FAULT_OBSERVER_CRASH_AFTER", None)
            raise RuntimeError("injected observer fault")
        if wakes(event):
            self._changed.set()
            self._wake.set()


class InboxWatcher:
    def __init__(
        self, inbox: Path, mode: WatchMode, wake: threading.Event, poll_seconds: float
    ) -> None:
        self._inbox = inbox
        self._mode = mode
        self._wake = wake
        # Set with each wake-up of ours: the loop is woken by job threads too, and only an
        # inbox event (or the periodic rescan) calls for a pass over the inbox.
        self.changed = threading.Event()
        self._poll_seconds = poll_seconds
        self._observer: Any = None
        self.kind: str = "none"
        self.restarts = 0
        self._log = structlog.get_logger()

    def start(self) -> None:
        if self._mode in ("auto", "inotify"):
            _no_move_pairing_delay()
            try:
                self._observer = self._begin(Observer())
                self.kind = "inotify"
                return
            except OSError as exc:
                if self._mode == "inotify":
                    raise
                # e.g. fs.inotify.max_user_instances reached: fall back, keep serving.
                self._log.warning("inotify_unavailable", error=str(exc), fallback="polling")
        self._observer = self._begin(PollingObserver(timeout=self._poll_seconds))
        self.kind = "polling"

    def _begin(self, observer: Any) -> Any:
        handler = _WakeHandler(self._wake, self.changed)
        observer.schedule(handler, str(self._inbox), recursive=False)
        observer.start()
        return observer

    def healthy(self) -> bool:
        if self._observer is None or not self._observer.is_alive():
            return False
        # The emitter threads die with the dispatcher's exception handling too.
        emitters = getattr(self._observer, "emitters", ())
        return all(e.is_alive() for e in emitters)

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(timeout=2)
            self._observer = None
