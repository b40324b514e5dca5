"""The daemon's view of the jobs it knows: running, waiting for a slot or a retry, finished.

Shared by the loop, the intake, recovery and retention; touched only from the loop thread
(job threads hand their handle back through a queue).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

from spooler.layout import SpoolLayout
from spooler.runner import JobHandle
from spooler.status import JobStatus, State

# (inode, ctime_ns) of a job folder: an inode alone is reused at once by the next mkdir, so a
# deleted and resubmitted id would look like the one remembered.
FolderIdentity = tuple[int, int]


def folder_identity(layout: SpoolLayout, job_id: str) -> FolderIdentity | None:
    try:
        info = os.lstat(layout.job_dir(job_id))
    except OSError:
        return None
    return (info.st_ino, info.st_ctime_ns)


@dataclass(frozen=True)
class FinalJob:
    state: State
    finished_at: datetime | None
    folder: FolderIdentity


@dataclass
class JobTable:
    layout: SpoolLayout
    max_jobs: int
    running: dict[str, JobHandle] = field(default_factory=dict)
    waiting: dict[str, JobHandle] = field(default_factory=dict)  # ours, queued
    unsaved: dict[str, JobHandle] = field(default_factory=dict)  # final status not on disk
    # Final statuses never change: remembered instead of re-read, while the folder is the
    # same one.
    final: dict[str, FinalJob] = field(default_factory=dict)

    def free_slots(self) -> int:
        """Slots for jobs to start: `max_jobs` encode at once. A job that has encoded
        (checks and publishes its outputs) holds no slot, but at most 2 x `max_jobs` jobs
        run in all, encoding or publishing, so a slow storage makes the queue wait, not
        pile up."""
        encoding = sum(1 for handle in self.running.values() if not handle.encoded.is_set())
        return min(self.max_jobs - encoding, 2 * self.max_jobs - len(self.running))

    def is_active(self, job_id: str) -> bool:
        return job_id in self.running or job_id in self.waiting

    def remember_final(self, status: JobStatus) -> None:
        folder = folder_identity(self.layout, status.job_id)
        if folder is not None:
            self.final[status.job_id] = FinalJob(status.state, status.finished_at, folder)

    def known_final(self, job_id: str, folder: FolderIdentity) -> bool:
        remembered = self.final.get(job_id)
        if remembered is not None and remembered.folder == folder:
            return True
        self.final.pop(job_id, None)
        return False
