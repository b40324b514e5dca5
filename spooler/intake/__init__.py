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
  jobs taken over, to queue.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from spooler.clock import Clocks
from spooler.runner import JobHandle

if TYPE_CHECKING:
    from spooler.config import Settings
    from spooler.intake.bullmq_intake import BullmqIntake
    from spooler.jobtable import JobTable
    from spooler.report import Reporter
    from spooler.worker import WorkerIdentity


class Intake(Protocol):
    name: str

    def take(self, clocks: Clocks) -> list[JobHandle]: ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def owns(self, job_id: str) -> bool: ...

    def release(self, job_id: str) -> None: ...

    def housekeeping(self, clocks: Clocks) -> list[JobHandle]: ...


def make_bullmq_intake(
    settings: Settings,
    table: JobTable,
    reporter: Reporter,
    me: WorkerIdentity,
    wake: threading.Event,
) -> BullmqIntake:
    """The BullMQ intake (docs/fleet.md); imported only when configured, so the spool needs
    neither bullmq nor redis installed (`pip install spooler[fleet]`)."""
    from spooler.intake.bullmq_intake import BullmqIntake

    return BullmqIntake(settings, table, reporter, me, wake)
