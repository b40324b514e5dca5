"""Validation building blocks shared by the export models."""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

# Seconds are compared with this slack: JSON floats written by a browser are not exact.
TIME_EPSILON = 1e-6

# Anything that libavformat could read as a protocol ("concat:", "http:", "file:", ...).
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


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
    if source.startswith(("https://", "http://")):
        return "URL sources are not supported yet (use a path inside a media root)"
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
