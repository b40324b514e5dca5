"""The intake seam: where jobs come from.

Today the spool's inbox (`spooler.intake.inbox.InboxIntake`); next a BullMQ queue. The
daemon loop sees only this interface (docs/architecture.md sketches the BullMQ adapter
against it):

- `take(clocks)`: jobs to run, as handles, at most as many as there are free slots
  (a slot is taken before a claim, so a job no worker can start stays visible to others);
  jobs refused on arrival are finished by the intake itself (rejected, cancelled);
- `cancel_requested(job_id)`: has the client asked to cancel this job?
- `owns(job_id)`: do we still hold the job (fencing: a worker presumed dead must drop it
  and publish nothing)?
- `release(job_id)`: give a job back at shutdown so another worker takes it at once;
- `housekeeping(clocks)`: take over what dead workers left, markers, quarantine; returns
  jobs taken over, to queue;
- `start()` / `close()`: begin and end listening (the inbox's watcher, the queue's worker);
  `start` raises RuntimeError when it cannot (the daemon then exits 2);
- `check(clocks)`: keep listening (restart a dead watcher); True if it had to, so the loop
  takes a look at once;
- `describe()`: what it listens to, for the start-up log and systemd's status line.

`make_intake` picks one from the settings (`intake: spool | bullmq`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from spooler.clock import Clocks
from spooler.runner import JobHandle

if TYPE_CHECKING:
    from spooler.config import Settings
    from spooler.jobtable import JobTable
    from spooler.report import Reporter
    from spooler.retention import Retention
    from spooler.storage import OutputStore
    from spooler.worker import WorkerIdentity


class Intake(Protocol):
    name: str
    settings: Settings  # a reload (SIGHUP) sets it: applies to jobs taken from then on

    def take(self, clocks: Clocks, *, rescan: bool = True) -> list[JobHandle]: ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def owns(self, job_id: str) -> bool: ...

    def release(self, job_id: str) -> None: ...

    def housekeeping(self, clocks: Clocks) -> list[JobHandle]: ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def check(self, clocks: Clocks) -> bool: ...

    def describe(self) -> dict[str, str]: ...


def make_intake(
    settings: Settings,
    table: JobTable,
    reporter: Reporter,
    retention: Retention,
    outputs: OutputStore,
    me: WorkerIdentity,
    wake: threading.Event,
) -> Intake:
    """The intake the settings name. The BullMQ one is imported only when configured, so the
    spool needs neither bullmq nor redis installed (`pip install spooler[fleet]`); it is also
    a report sink (progress and outcomes go back to the queue)."""
    if settings.intake == "bullmq":
        from spooler.intake.bullmq_intake import BullmqIntake

        queue_intake = BullmqIntake(settings, table, reporter, me, wake)
        reporter.sinks.append(queue_intake)
        return queue_intake
    from spooler.intake.inbox import InboxIntake

    return InboxIntake(settings, table, reporter, retention, outputs, me, wake)
