"""Spool operations on disk: scan the inbox, claim, establish a job folder, move strays aside,
read and write status files, take over the jobs of dead workers.

Claim protocol (docs/protocol.md, "Claim"):
1. rename inbox/<id>.json -> claims/<id>.<worker>.json   exactly one daemon wins this rename
2. write jobs/.tmp-<id>.<rand>/ with our owner token and the first status
3. rename that folder -> jobs/<id>                           fails if the id already exists
4. rename the claim file -> jobs/<id>/job.json
A crash between steps leaves a claim file whose worker is dead; any daemon finishes it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spooler.errors import ErrorCode
from spooler.fsutil import (
    TEMP_PREFIX,
    FileTooLarge,
    UnsafeFile,
    atomic_write_json,
    fsync_dir,
    is_real_dir,
    read_untrusted,
    temp_name_for,
)
from spooler.layout import (
    PROTOCOL_VERSION,
    EntryKind,
    InboxEntry,
    SpoolLayout,
    classify_inbox_name,
    is_valid_job_id,
)
from spooler.status import JobStatus, iso


@dataclass(frozen=True)
class InboxFile:
    entry: InboxEntry
    path: Path
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int  # set by the file server on write and rename; `cp -p` cannot fake it
    is_regular: bool

    @property
    def signature(self) -> tuple[int, int, int]:
        return (self.inode, self.size, self.mtime_ns)


def ensure_layout(layout: SpoolLayout) -> None:
    for directory in layout.all_dirs():
        directory.mkdir(parents=True, exist_ok=True)


def restore_layout(layout: SpoolLayout) -> list[Path]:
    """The spool's folders that someone removed, made again; returns those it made. Not
    the spool itself: a root that is gone (an unmounted volume) is not made afresh here,
    nor is a folder's name taken by something else (the passes report what fails)."""
    made: list[Path] = []
    for directory in layout.all_dirs():
        try:
            directory.mkdir()
        except OSError:  # there already (the usual case), or cannot be made
            continue
        made.append(directory)
    return made


def scan_inbox(layout: SpoolLayout) -> list[InboxFile]:
    """Every inbox entry we may act on (temporary names are skipped)."""
    found: list[InboxFile] = []
    try:
        entries = list(os.scandir(layout.inbox))
    except FileNotFoundError:
        return found
    for item in entries:
        entry = classify_inbox_name(item.name)
        if entry.kind is EntryKind.IGNORED:
            continue
        try:
            info = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        found.append(
            InboxFile(
                entry=entry,
                path=Path(item.path),
                inode=info.st_ino,
                size=info.st_size,
                mtime_ns=info.st_mtime_ns,
                ctime_ns=info.st_ctime_ns,
                is_regular=item.is_file(follow_symlinks=False),
            )
        )
    return found


def claim(layout: SpoolLayout, job_id: str, worker_id: str) -> Path | None:
    """Step 1: the atomic claim. None when another daemon won (or the file vanished)."""
    target = layout.claim_file(job_id, worker_id)
    try:
        layout.inbox_job(job_id).rename(target)
    except FileNotFoundError:
        return None
    return target


class DuplicateJob(Exception):
    pass


def establish(
    layout: SpoolLayout, job_id: str, claim_file: Path, owner_id: str, status: JobStatus
) -> None:
    """Steps 2-4: create jobs/<id>/ with owner token, status, then the job file.

    Raises DuplicateJob (the claim file is left in place for the caller) when jobs/<id>
    already exists.
    """
    final = layout.job_dir(job_id)
    if final.exists():
        if _is_half_established(final, owner_id):
            _finish_establish(layout, job_id, claim_file)
            return
        raise DuplicateJob(job_id)
    staging = layout.jobs / f"{TEMP_PREFIX}{job_id}.{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        (staging / f".owner.{owner_id}").touch()
        atomic_write_json(staging / "status.json", status.to_json())
        try:
            staging.rename(final)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise DuplicateJob(job_id) from exc
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _finish_establish(layout, job_id, claim_file)


def _is_half_established(job_dir: Path, owner_id: str) -> bool:
    return (job_dir / f".owner.{owner_id}").exists() and not (job_dir / "job.json").exists()


def _finish_establish(layout: SpoolLayout, job_id: str, claim_file: Path) -> None:
    claim_file.rename(layout.job_file(job_id))
    fsync_dir(layout.job_dir(job_id))


def printable_name(name: str) -> str:
    """A file name as JSON and logs can carry it: bytes that are not UTF-8 (os.listdir
    hands them over as lone surrogates) become \\xNN escapes; valid names are unchanged."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


# Room for the stamp, the random part and ".error.json" within a 255-byte name.
_SAFE_NAME_CHARS = 120


def rejected_name(stamp: str, token: str, original: str) -> str:
    """The name a moved-aside entry gets in rejected/: ASCII only (so characters are bytes
    and no file system's 255-byte limit can be hit), unique, and recognisable."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in original)
    return f"{stamp}-{token}-{safe[:_SAFE_NAME_CHARS] or '_'}"


def move_aside(
    layout: SpoolLayout,
    path: Path,
    code: ErrorCode,
    message: str,
    now: datetime,
    original_name: str | None = None,
) -> Path:
    """Move a file (or folder) out of the inbox into rejected/, with an error file beside it.

    Nothing is overwritten: the name gets a timestamp and a random suffix.
    """
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = layout.rejected / rejected_name(stamp, secrets.token_hex(3), path.name)
    path.rename(target)
    atomic_write_json(
        target.with_name(target.name + ".error.json"),
        {
            "protocolVersion": PROTOCOL_VERSION,
            "originalName": printable_name(original_name or path.name),
            "movedTo": target.name,
            "code": code.value,
            "message": message,
            "at": iso(now),
        },
    )
    return target


# A status with a preflight of 5,000 segments is ~2 MB; anything far larger is not ours.
STATUS_MAX_BYTES = 16 * 1024 * 1024


class UnreadableStatus(ValueError):
    """status.json is there but is not a status we can trust (a link, a FIFO, too large)."""


def read_status_file(path: Path) -> JobStatus | None:
    """Parse a job's status file as untrusted input: no symlink (neither the file nor its
    job folder) is followed, a FIFO never blocks, the size is capped. None if absent;
    ValueError (UnreadableStatus or pydantic's ValidationError) if it is not a valid status."""
    try:
        raw = read_untrusted(path, STATUS_MAX_BYTES, in_real_dir=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (UnsafeFile, FileTooLarge) as exc:
        raise UnreadableStatus(f"status file {exc}") from exc
    return JobStatus.model_validate_json(raw)


def read_status(layout: SpoolLayout, job_id: str) -> JobStatus | None:
    """The status of jobs/<job_id>; one that names another job is not this job's status
    (every later write goes to the path its jobId names)."""
    status = read_status_file(layout.status_file(job_id))
    if status is not None and status.job_id != job_id:
        raise UnreadableStatus(f"status file names job {status.job_id!r}, not {job_id!r}")
    return status


def write_status(layout: SpoolLayout, status: JobStatus, *, durable: bool = True) -> None:
    path = layout.status_file(status.job_id)
    try:
        atomic_write_json(path, status.to_json(), durable=durable)
    except IsADirectoryError:
        # A folder at status.json (a client's doing) cannot be replaced by a rename: set
        # aside under a temporary name (removed with the attempt's temporary files).
        if not is_real_dir(path):
            raise
        with contextlib.suppress(FileNotFoundError):
            path.rename(temp_name_for(path))
        atomic_write_json(path, status.to_json(), durable=durable)


def owner_of(layout: SpoolLayout, job_id: str) -> str | None:
    """The worker id in the job's owner token, or None if there is none."""
    try:
        names = os.listdir(layout.job_dir(job_id))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for name in names:
        if name.startswith(".owner."):
            return name.removeprefix(".owner.")
    return None


RELEASED = "released"


def take_ownership(layout: SpoolLayout, job_id: str, old_owner: str, new_owner: str) -> bool:
    """Atomic takeover: rename the owner token. Exactly one contender succeeds."""
    try:
        layout.owner_file(job_id, old_owner).rename(layout.owner_file(job_id, new_owner))
    except FileNotFoundError:
        return False
    return True


def job_ids(layout: SpoolLayout) -> list[str]:
    """Names in jobs/ that are job ids (a client may have put anything else there)."""
    try:
        return [e.name for e in os.scandir(layout.jobs) if is_valid_job_id(e.name)]
    except FileNotFoundError:
        return []


def read_job_bytes_for_priority(raw: bytes) -> int:
    """Best-effort priority of an unclaimed job file (invalid files sort as 0)."""
    try:
        data: Any = json.loads(raw)
        value = data.get("priority", 0) if isinstance(data, dict) else 0
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0
    except (ValueError, RecursionError):
        return 0


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)
