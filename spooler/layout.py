"""The spool's file layout (the public contract of docs/protocol.md) as pure path logic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

PROTOCOL_VERSION = 1

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)

# Names a writer uses while a file is incomplete; the daemon never touches them.
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".swp", "~")


def is_valid_job_id(candidate: str) -> bool:
    return bool(_JOB_ID_RE.fullmatch(candidate))


class EntryKind(Enum):
    IGNORED = "ignored"  # a writer's temporary name
    JOB = "job"  # <id>.json
    CANCEL = "cancel"  # <id>.cancel
    DELETE = "delete"  # <id>.delete
    STRAY = "stray"  # anything else: moved aside to rejected/ with an error file


_MARKER_KINDS = {".json": EntryKind.JOB, ".cancel": EntryKind.CANCEL, ".delete": EntryKind.DELETE}


@dataclass(frozen=True)
class InboxEntry:
    name: str
    kind: EntryKind
    job_id: str | None


def classify_inbox_name(name: str) -> InboxEntry:
    """Decide what an inbox file name means, from the name alone."""
    if name.startswith(".") or name.endswith(_TEMP_SUFFIXES):
        return InboxEntry(name, EntryKind.IGNORED, None)
    stem, dot, suffix = name.rpartition(".")
    kind = _MARKER_KINDS.get(f".{suffix}") if dot else None
    if kind is None or not is_valid_job_id(stem):
        return InboxEntry(name, EntryKind.STRAY, None)
    return InboxEntry(name, kind, stem)


@dataclass(frozen=True)
class SpoolLayout:
    """Every path of the spool tree, derived from its root."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def claims(self) -> Path:
        return self.root / "claims"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    def all_dirs(self) -> tuple[Path, ...]:
        return (self.inbox, self.jobs, self.claims, self.rejected, self.workers, self.trash)

    def inbox_job(self, job_id: str) -> Path:
        return self.inbox / f"{job_id}.json"

    def inbox_cancel(self, job_id: str) -> Path:
        return self.inbox / f"{job_id}.cancel"

    def inbox_delete(self, job_id: str) -> Path:
        return self.inbox / f"{job_id}.delete"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def job_file(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "job.json"

    def status_file(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "status.json"

    def log_file(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "job.log"

    def job_cancel(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "cancel"

    def owner_file(self, job_id: str, worker_id: str) -> Path:
        """Ownership token: renaming it to another worker's name is the atomic takeover."""
        return self.job_dir(job_id) / f".owner.{worker_id}"

    def claim_file(self, job_id: str, worker_id: str) -> Path:
        return self.claims / f"{job_id}.{worker_id}.json"

    def heartbeat_file(self, worker_id: str) -> Path:
        return self.workers / f"{worker_id}.json"
