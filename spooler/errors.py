"""One exception root; every job failure maps to a stable error code in the status file.

Codes are part of the public protocol (docs/protocol.md). Each code is either *permanent*
(retrying cannot help: the job fails at once) or *transient* (retried with backoff while
attempts remain).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # Rejected before running: the job file itself is bad (permanent).
    INVALID_ID = "invalid_id"
    DUPLICATE_ID = "duplicate_id"
    NOT_A_FILE = "not_a_file"
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_JOB = "invalid_job"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    # Failed while preparing or running (permanent).
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    SOURCE_MISSING = "source_missing"
    SOURCE_FORBIDDEN = "source_forbidden"  # the storage's 403 on an allowed object
    SOURCE_UNREADABLE = "source_unreadable"
    SOURCE_TOO_SHORT = "source_too_short"
    UNSUPPORTED_MEDIA = "unsupported_media"
    TIMEOUT = "timeout"
    VERIFY_FAILED = "verify_failed"
    FFMPEG_MISSING = "ffmpeg_missing"
    # Failed while running (transient: retried while attempts remain).
    FFMPEG_FAILED = "ffmpeg_failed"
    FFMPEG_KILLED = "ffmpeg_killed"
    STALLED = "stalled"
    DISK_FULL = "disk_full"
    WORKER_LOST = "worker_lost"
    SOURCE_CHANGED = "source_changed"  # the object's ETag moved mid-attempt
    STORAGE_FAILED = "storage_failed"  # network faults or 5xx after every retry
    INTERNAL = "internal_error"
    # Not a failure: the job was cancelled on request.
    CANCELLED = "cancelled"
    # For markers and strays only (never in a status file).
    UNKNOWN_JOB = "unknown_job"


TRANSIENT_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.FFMPEG_FAILED,
        ErrorCode.FFMPEG_KILLED,
        ErrorCode.STALLED,
        ErrorCode.DISK_FULL,
        ErrorCode.WORKER_LOST,
        ErrorCode.SOURCE_CHANGED,
        ErrorCode.STORAGE_FAILED,
        ErrorCode.INTERNAL,
    }
)


def is_transient(code: ErrorCode) -> bool:
    return code in TRANSIENT_CODES


class SpoolerError(Exception):
    """Root of every error spooler raises on purpose."""


class ConfigError(SpoolerError):
    """A setting is invalid; the daemon refuses to start."""


class JobError(SpoolerError):
    """A job cannot go on; `code` lands in the status file."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def transient(self) -> bool:
        return is_transient(self.code)


class JobCancelled(JobError):
    """The job's cancel marker appeared while it ran."""

    def __init__(self, message: str = "cancelled on request") -> None:
        super().__init__(ErrorCode.CANCELLED, message)


class DaemonStopping(SpoolerError):
    """The daemon is shutting down; the job is requeued, not failed."""


class OwnershipLost(SpoolerError):
    """Another worker took this job over (we were presumed dead): touch nothing more."""
