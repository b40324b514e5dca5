"""The storage seam: where a job's outputs are published.

Today outputs land in the job's folder on the shared volume (`JobFolderOutputs`); the S3
storage publishes to a bucket behind the same interface. Sources are opened by
`spooler.export.sources.open_source` (confined to the media roots, read through
/proc/self/fd/N): the place another source storage plugs in.

The crash rules every storage keeps (docs/protocol.md, "Publishing"):
1. every output is verified before any is published;
2. before each publish, the status journals it (`pendingPublish`: temporary and final
   name), durably;
3. the publish itself is one atomic step per output (a rename here, the multipart
   completion on S3);
4. after a crash, recovery rolls a journalled publish forward (`roll_forward`) and, once
   every planned output is in place, finishes the job instead of running it again.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Protocol

from spooler.fsutil import TEMP_PREFIX, fsync_dir, fsync_file, open_log_for_append
from spooler.layout import SpoolLayout
from spooler.status import JobStatus


class OutputStore(Protocol):
    def make_durable(self, temp: Path) -> None:
        """The verified temporary file's data must survive a power cut (before step 2)."""

    def commit(self, job_id: str, temp: Path, name: str) -> None:
        """Step 3: make `temp` the output `name`, atomically."""

    def roll_forward(self, job_id: str, status: JobStatus) -> bool:
        """Step 4: finish a journalled publish; True when every planned output is in place
        with its listed size."""
        ...

    def remove(self, job_id: str, names: list[str]) -> None:
        """Withdraw outputs of an attempt that did not succeed."""


class JobFolderOutputs:
    """Outputs as files in jobs/<id>/. Names come from a status, which a client could have
    edited: the status model admits only plain names, so none leads out of the folder."""

    def __init__(self, layout: SpoolLayout) -> None:
        self.layout = layout

    def make_durable(self, temp: Path) -> None:
        fsync_file(temp)

    def commit(self, job_id: str, temp: Path, name: str) -> None:
        job_dir = self.layout.job_dir(job_id)
        temp.replace(job_dir / name)
        fsync_dir(job_dir)

    def roll_forward(self, job_id: str, status: JobStatus) -> bool:
        job_dir = self.layout.job_dir(job_id)
        pending = status.pending_publish
        # The temporary name must be one of ours (never a user's file renamed over an output).
        if (
            pending is not None
            and pending.temp.startswith(TEMP_PREFIX)
            and _is_regular(job_dir / pending.temp)
        ):
            (job_dir / pending.temp).replace(job_dir / pending.path)
            with os.fdopen(open_log_for_append(job_dir / "job.log"), "a", encoding="utf-8") as log:
                log.write(f"# published {pending.path} (rename finished by recovery)\n")
        listed = {output.path: output for output in status.outputs}
        if not status.planned_outputs or set(status.planned_outputs) - set(listed):
            return False
        return all(
            _is_regular(job_dir / name, size=listed[name].size_bytes)
            for name in status.planned_outputs
        )

    def remove(self, job_id: str, names: list[str]) -> None:
        job_dir = self.layout.job_dir(job_id)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (job_dir / name).unlink()


def _is_regular(path: Path, *, size: int | None = None) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and (size is None or info.st_size == size)
