"""The durable outbox: one file per (event, target), outside the job folders.

    <spool>/outbox/pending/<eventId>.<target>.json        the request to make (never modified)
    <spool>/outbox/pending/<eventId>.<target>.state.json  attempts so far, next attempt
    <spool>/outbox/delivered/<eventId>.<target>.json      record + state + outcome
    <spool>/outbox/failed/<eventId>.<target>.json         given up (410, expired, refused)
    <spool>/outbox/since.json                             when webhooks were first enabled

Every file is written atomically. A record is written before its first attempt (fsynced at
the latest before its job folder may be removed: until then the fsynced status file is the
durable record, see sink.py); an outcome is written durably before the pending files are
removed, so a crash in between leaves a record that is recognised as done. Deleting or
expiring a job folder never touches the outbox.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from spooler.fsutil import (
    FileTooLarge,
    UnsafeFile,
    atomic_write_json,
    fsync_dir,
    fsync_file,
    read_untrusted,
)
from spooler.layout import SpoolLayout
from spooler.status import _CamelModel

Target = Literal["operator", "job", "command"]
MAX_RECORD_BYTES = 4 * 1_048_576


class OutboxRecord(_CamelModel):
    # A file name part too (pending/<id>.<target>.json): no dot, no slash.
    id: str = Field(
        pattern=r"^evt_[A-Za-z0-9_]{1,64}$",
        description="The webhook-id: the same on every attempt.",
    )
    target: Target
    url: str | None = None
    command: list[str] | None = None
    job_id: str
    event: str
    sequence: int
    event_at: datetime
    created_at: datetime
    body: str = Field(description="The exact JSON body sent (and signed) on every attempt.")
    mac: str | None = Field(None, description="signing.seal of every other field.")

    @property
    def name(self) -> str:
        return f"{self.id}.{self.target}"

    def sealed_content(self) -> bytes:
        fields = self.model_dump(mode="json", by_alias=True, exclude={"mac"})
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


class AttemptState(_CamelModel):
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    last_status: int | None = None


class Outcome(_CamelModel):
    outcome: Literal["delivered", "failed"]
    at: datetime
    record: OutboxRecord
    state: AttemptState


@dataclass(frozen=True)
class Outbox:
    layout: SpoolLayout

    @property
    def root(self) -> Path:
        return self.layout.root / "outbox"

    @property
    def pending(self) -> Path:
        return self.root / "pending"

    @property
    def delivered(self) -> Path:
        return self.root / "delivered"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def ensure(self) -> None:
        for directory in (self.pending, self.delivered, self.failed):
            directory.mkdir(parents=True, exist_ok=True)

    def record_path(self, name: str) -> Path:
        return self.pending / f"{name}.json"

    def state_path(self, name: str) -> Path:
        return self.pending / f"{name}.state.json"

    def known(self, name: str) -> bool:
        """Pending, delivered or given up: recovery must not create it again."""
        return any(
            (d / f"{name}.json").exists() for d in (self.pending, self.delivered, self.failed)
        )

    def finished(self, name: str) -> bool:
        return (self.delivered / f"{name}.json").exists() or (self.failed / f"{name}.json").exists()

    def add(self, record: OutboxRecord, *, durable: bool) -> bool:
        """Write a new record; False if it is already known (idempotent).

        `durable=False` while the job's status file (fsynced) still holds the event, from
        which recovery rebuilds a record lost in a power cut; `durable=True` (and an fsync
        of a record already pending) before that status file is deleted."""
        path = self.record_path(record.name)
        if self.known(record.name):
            if durable and path.exists():
                with contextlib.suppress(FileNotFoundError):
                    fsync_file(path)
                    fsync_dir(self.pending)
            return False
        atomic_write_json(path, record.model_dump(mode="json", by_alias=True), durable=durable)
        return True

    def pending_names(self) -> list[str]:
        try:
            names = os.listdir(self.pending)
        except FileNotFoundError:
            return []
        return sorted(
            n.removesuffix(".json")
            for n in names
            if n.endswith(".json") and not n.endswith(".state.json") and not n.startswith(".")
        )

    def read_record(self, name: str) -> OutboxRecord | None:
        try:
            raw = read_untrusted(self.record_path(name), MAX_RECORD_BYTES, in_real_dir=True)
            return OutboxRecord.model_validate_json(raw)
        except (OSError, ValueError, ValidationError, UnsafeFile, FileTooLarge):
            return None

    def read_state(self, name: str) -> AttemptState:
        try:
            raw = read_untrusted(self.state_path(name), 65536, in_real_dir=True)
            return AttemptState.model_validate_json(raw)
        except (OSError, ValueError, ValidationError, UnsafeFile, FileTooLarge):
            return AttemptState()

    def write_state(self, name: str, state: AttemptState) -> None:
        # Losing an attempt count in a power cut only means one attempt more: no fsync.
        atomic_write_json(
            self.state_path(name), state.model_dump(mode="json", by_alias=True), durable=False
        )

    def finish(self, outcome: Outcome) -> None:
        folder = self.delivered if outcome.outcome == "delivered" else self.failed
        name = outcome.record.name
        atomic_write_json(folder / f"{name}.json", outcome.model_dump(mode="json", by_alias=True))
        self.drop_pending(name)

    def quarantine(self, name: str) -> None:
        """Move a pending file that cannot be delivered (unreadable, a link, a record whose
        content names another file) to failed/<name>.unreadable: never read again, pruned
        like the outcomes."""
        with contextlib.suppress(FileNotFoundError):
            self.record_path(name).rename(self.failed / f"{name}.unreadable")
        with contextlib.suppress(FileNotFoundError):
            self.state_path(name).unlink()

    def drop_pending(self, name: str) -> None:
        for path in (self.state_path(name), self.record_path(name)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def outcomes(self, folder: Path) -> Iterator[Path]:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                yield Path(entry.path)

    def prune(self, older_than: float) -> int:
        """Remove outcome files (and quarantined ones) last written before `older_than`
        (a POSIX time)."""
        removed = 0
        for folder in (self.delivered, self.failed):
            for path in [*self.outcomes(folder), *folder.glob("*.unreadable")]:
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < older_than:
                        path.unlink()
                        removed += 1
        return removed

    def counts(self) -> dict[str, int]:
        return {
            "pending": len(self.pending_names()),
            "delivered": sum(1 for _ in self.outcomes(self.delivered)),
            "failed": sum(1 for _ in self.outcomes(self.failed)),
        }

    def oldest_pending_age(self, now: float) -> float:
        """Seconds since the oldest pending record was written (0: nothing pending)."""
        oldest = now
        for name in self.pending_names():
            with contextlib.suppress(FileNotFoundError):
                oldest = min(oldest, self.record_path(name).stat().st_mtime)
        return max(0.0, now - oldest)

    def for_job(self, job_id: str) -> list[tuple[str, OutboxRecord | None, AttemptState | None]]:
        """Every delivery of a job, for `spooler webhook ls` (status of each, newest first)."""
        found: list[tuple[str, OutboxRecord | None, AttemptState | None]] = []
        for name in self.pending_names():
            record = self.read_record(name)
            if record is not None and record.job_id == job_id:
                found.append(("pending", record, self.read_state(name)))
        for label, folder in (("delivered", self.delivered), ("failed", self.failed)):
            for path in self.outcomes(folder):
                try:
                    raw = read_untrusted(path, MAX_RECORD_BYTES, in_real_dir=True)
                    outcome = Outcome.model_validate_json(raw)
                except (OSError, ValueError, ValidationError, UnsafeFile, FileTooLarge):
                    continue
                if outcome.record.job_id == job_id:
                    found.append((label, outcome.record, outcome.state))
        return sorted(found, key=lambda item: item[1].sequence if item[1] else 0)
