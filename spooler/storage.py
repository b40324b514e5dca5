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
   every planned output is in place, finishes the job instead of running it again. A roll
   forward that talks to remote storage (an upload to finish: a 1 GB output takes a while)
   runs off the daemon's loop thread (`remote_roll_forward` says which: recovery.py).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from spooler.config import Settings
from spooler.fsutil import TEMP_PREFIX, fsync_dir, fsync_file, open_log_for_append
from spooler.layout import SpoolLayout
from spooler.status import JobStatus, OutputInfo


@dataclass(frozen=True)
class RolledForward:
    """What recovery learned from a roll forward."""

    published: bool  # every planned output is in place with its listed size
    # The status's output entries, completed with what the storage reported (the etag and
    # checksum of an upload recovery finished); None: unchanged.
    outputs: list[OutputInfo] | None = None


class OutputStore(Protocol):
    def make_durable(self, temp: Path) -> None:
        """The verified temporary file's data must survive a power cut (before step 2)."""

    def begin(self, job_id: str, temp: Path, info: OutputInfo) -> str | None:
        """Before step 2: start a publish that needs journalling (S3: the multipart
        upload whose UploadId the journal keeps); None when there is nothing to journal."""
        ...

    def commit(
        self, job_id: str, temp: Path, name: str, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Step 3: make `temp` the output `name`, atomically; `check` raises to stop a long
        publish (cancel). Returns fields the output's status entry gains (uri, etag, ...)."""
        ...

    def roll_forward(self, job_id: str, status: JobStatus) -> RolledForward:
        """Step 4: finish a journalled publish; published when every planned output is in
        place with its listed size."""
        ...

    def remote_roll_forward(self, status: JobStatus) -> bool:
        """Would `roll_forward` talk to remote storage (network calls, an upload to
        finish)? Then recovery runs it off the loop thread."""
        ...

    def remove(self, job_id: str, names: list[str]) -> None:
        """Withdraw outputs of an attempt that did not succeed."""


def output_store(settings: Settings, layout: SpoolLayout) -> OutputStore:
    """The job folder, plus S3 for outputs with a destination when buckets are allowed."""
    local = JobFolderOutputs(layout)
    if not settings.s3.allowed_buckets:
        return local
    from spooler.s3.client import make_client  # boto3 is loaded only where S3 is configured
    from spooler.s3.outputs import RoutedOutputs, S3Uploads

    return RoutedOutputs(local, S3Uploads(make_client(settings.s3), settings.s3))


class JobFolderOutputs:
    """Outputs as files in jobs/<id>/. Names come from a status, which a client could have
    edited: the status model admits only plain names, so none leads out of the folder."""

    def __init__(self, layout: SpoolLayout) -> None:
        self.layout = layout

    def make_durable(self, temp: Path) -> None:
        fsync_file(temp)

    def begin(self, job_id: str, temp: Path, info: OutputInfo) -> str | None:
        return None  # a rename needs no more than the journal's names

    def commit(
        self, job_id: str, temp: Path, name: str, check: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        job_dir = self.layout.job_dir(job_id)
        temp.replace(job_dir / name)
        fsync_dir(job_dir)
        return {}

    def roll_forward(self, job_id: str, status: JobStatus) -> RolledForward:
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
            return RolledForward(False)
        return RolledForward(
            all(
                _is_regular(job_dir / name, size=listed[name].size_bytes)
                for name in status.planned_outputs
            )
        )

    def remote_roll_forward(self, status: JobStatus) -> bool:
        return False  # renames and stats: quick, done in the loop

    def remove(self, job_id: str, names: list[str]) -> None:
        job_dir = self.layout.job_dir(job_id)
        for name in names:
            # A folder at an output's name is a client's, not what we published: left.
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                (job_dir / name).unlink()


def _is_regular(path: Path, *, size: int | None = None) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and (size is None or info.st_size == size)
