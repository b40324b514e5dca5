"""Validation building blocks shared by the export models."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

# Seconds are compared with this slack: JSON floats written by a browser are not exact.
TIME_EPSILON = 1e-6

# Anything that libavformat could read as a protocol ("concat:", "http:", "file:", ...).
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Remote sources (docs/s3.md): an object in a bucket, or a (presigned) URL. The model only
# checks their shape; the operator's allow-lists are applied when the job runs.
REMOTE_SCHEMES = ("s3://", "https://", "http://")
MAX_PATH_CHARS = 1024
MAX_URL_CHARS = 4096
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def fail(path: tuple[int | str, ...], code: str, message: str, value: Any) -> ValidationError:
    return ValidationError.from_exception_data(
        "ExportJob",
        [InitErrorDetails(type=PydanticCustomError(code, message), loc=path, input=value)],
    )


def check_source_syntax(source: str) -> str | None:
    """Why `source` is not an acceptable media-root-relative path, or None if it is.

    Pure and shared by the model (rejected at parse time) and sources.py (defence in depth).
    """
    if not source or source != source.strip():
        return "must be a non-empty path without surrounding spaces"
    if source.startswith(REMOTE_SCHEMES):
        return "must be a path inside a media root, not a URL"
    if _PROTOCOL.match(source):
        return "must be a plain path, not a protocol or URL"
    if source.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", source):
        return "must be relative to a media root, not absolute"
    if any(ord(c) < 32 or c == "\\" for c in source):
        return "must not contain control characters or backslashes"
    parts = source.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "must not contain empty, '.' or '..' components"
    if any(part.startswith("-") for part in parts):
        return "no path component may start with '-'"
    return None


def check_source_name(source: str) -> str | None:
    """Why `source` is neither a media-root-relative path nor a remote source's URL, or None.

    The messages never repeat the value: a presigned URL is a bearer credential.
    """
    if source.startswith(REMOTE_SCHEMES):
        return check_remote_syntax(source)
    if len(source) > MAX_PATH_CHARS:
        return f"must be at most {MAX_PATH_CHARS} characters"
    return check_source_syntax(source)


def check_remote_syntax(source: str) -> str | None:
    """The shape of an `s3://bucket/key` or `http(s)://host/path` source (pure)."""
    if len(source) > MAX_URL_CHARS:
        return f"must be at most {MAX_URL_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in source):
        return "must not contain control characters"
    if source.startswith("s3://"):  # a key may hold spaces; the gateway reads it, not ffmpeg
        bucket, _, key = source[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket) or not key:
            return "must be s3://bucket/key with a valid bucket name and a key"
        return None
    if " " in source:
        return "must not contain spaces (a URL encodes them as %20)"
    try:
        parts = urlsplit(source)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "must be a valid URL"
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return "must be a URL with a host and no user info"
    if parts.fragment or source.endswith("#"):
        return "must be a URL without a fragment"
    if not parts.path or parts.path == "/":
        return "must be a URL naming an object (a path after the host)"
    return None
