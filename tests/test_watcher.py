"""The inbox watcher, with real inotify and polling observers on a real folder: what brings
work in wakes the loop; the loop's own reads and files leaving the inbox do not (each such
wake was a wasted inbox pass, and the pass's reads woke it again: issue 18)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spooler.fsutil import open_for_writing_elsewhere, read_untrusted
from spooler.watcher import InboxWatcher


def woke(wake: threading.Event, action: Callable[[], object], within: float) -> bool:
    wake.clear()
    action()
    return wake.wait(within)


@pytest.fixture(params=["inotify", "polling"])
def watched(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Path, threading.Event]]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    wake = threading.Event()
    watcher = InboxWatcher(inbox, request.param, wake, poll_seconds=0.05)
    watcher.start()
    assert watcher.kind == request.param
    time.sleep(0.2)  # the polling observer's first snapshot
    yield inbox, wake
    watcher.stop()


def test_what_brings_work_in_wakes_the_loop(watched: tuple[Path, threading.Event]) -> None:
    inbox, wake = watched
    outside = inbox.parent / "elsewhere.json"
    outside.write_text("{}")
    assert woke(wake, lambda: (inbox / ".tmp-a").write_text("{}"), 2.0)
    assert woke(wake, lambda: os.rename(inbox / ".tmp-a", inbox / "a.json"), 2.0)
    assert woke(wake, lambda: os.rename(outside, inbox / "b.json"), 2.0)
    assert woke(wake, lambda: (inbox / "a.cancel").touch(), 2.0)
    assert woke(wake, lambda: (inbox / "a-dir").mkdir(), 2.0)


def test_reads_and_departures_do_not_wake_the_loop(watched: tuple[Path, threading.Event]) -> None:
    inbox, wake = watched
    job = inbox / "a.json"
    job.write_text("{}")
    time.sleep(0.3)  # the write's own events are delivered
    # The loop's readiness probe and its read of the job file.
    assert not woke(wake, lambda: (open_for_writing_elsewhere(job), read_untrusted(job, 100)), 0.5)
    # A claim moves the file out of the inbox; a client removes a marker.
    (inbox / "b.cancel").touch()
    time.sleep(0.3)
    assert not woke(wake, lambda: os.rename(job, inbox.parent / "a.claimed.json"), 0.5)
    assert not woke(wake, lambda: (inbox / "b.cancel").unlink(), 0.5)
