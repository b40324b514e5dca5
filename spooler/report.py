"""The report seam: where a job's status goes.

Today the status goes to jobs/<id>/status.json; next to BullMQ progress events and webhooks.
Every write goes through `Reporter.write`: first the status file (atomic, durable unless the
change is only progress), then each sink in turn with the previous and the new status. A sink
that must not lose an event (webhooks) derives it from what was durably written, so after a
crash it can rebuild what it missed from the status files themselves.

A sink is called from the thread that wrote (the loop or a job's thread): it must be quick
and must never raise into the caller; a failing sink is logged and the write still stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from spooler.layout import SpoolLayout
from spooler.spool import write_status
from spooler.status import JobStatus


class StatusSink(Protocol):
    def status_written(self, previous: JobStatus | None, current: JobStatus) -> None:
        """`current` is on disk (durably, if its state changed)."""


class Reporter:
    def __init__(self, layout: SpoolLayout, sinks: Sequence[StatusSink] = ()) -> None:
        self.layout = layout
        self.sinks = list(sinks)
        self._log = structlog.get_logger()

    def write(
        self, previous: JobStatus | None, current: JobStatus, *, durable: bool = True
    ) -> None:
        """Write `current` (made from `previous` by status.transition or status.update),
        then tell the sinks. OSError from the write propagates; nothing is told then."""
        write_status(self.layout, current, durable=durable)
        self.announce(previous, current)

    def announce(self, previous: JobStatus | None, current: JobStatus) -> None:
        """Tell the sinks of a status already written (the claim writes the first status
        inside its staging folder)."""
        for sink in self.sinks:
            try:
                sink.status_written(previous, current)
            except Exception:
                self._log.exception("status_sink_failed", sink=type(sink).__name__)
