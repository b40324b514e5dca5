"""What in an upload folder is a finished upload to proxy (pure: names, sizes, times).

The shell (watch.py) walks the folders and asks these functions. "Finished" is stricter
than the inbox's rule (policy.inbox_file_ready, where settling alone suffices): an upload
over a slow link pauses longer than any settle time, and an upload route that appends a
chunk per request closes the file between chunks. So an upload must be unchanged for the
settle time AND, where the filesystem can tell (a Linux read lease), open for writing
nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spooler.export.rules import check_source_syntax

# What cameras and phones record (video: the proxy needs a picture).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".mxf", ".avi", ".mts", ".m2ts", ".ts"}
)
# Names writers use while an upload is incomplete: browsers (.part, .crdownload,
# .download), rsync (a dot-file), tus servers (the data file beside its .info), editors.
TEMP_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".upload",
                 ".info", ".lock", "~")  # fmt: skip
MAX_DEPTH = 8


@dataclass(frozen=True)
class UploadVerdict:
    ok: bool
    reason: str = ""  # why skipped (logged once per file)


def judge_name(relative: str, siblings: frozenset[str]) -> UploadVerdict:
    """Is this media-root-relative path a candidate, from its name alone?"""
    name = relative.rsplit("/", 1)[-1]
    if name.startswith("."):
        return UploadVerdict(False, "hidden or temporary name")
    lower = name.lower()
    if lower.endswith(TEMP_SUFFIXES):
        return UploadVerdict(False, "temporary upload name")
    if f"{name}.info" in siblings:
        return UploadVerdict(False, "a tus upload in progress")
    if "." not in name or f".{lower.rsplit('.', 1)[1]}" not in VIDEO_SUFFIXES:
        return UploadVerdict(False, "not a video file name")
    problem = check_source_syntax(relative)
    if problem:
        return UploadVerdict(False, problem)
    return UploadVerdict(True)


def upload_ready(
    *, unchanged_for: float, settle_seconds: float, writer_open: Callable[[], bool | None]
) -> bool:
    """`writer_open` (I/O: a lease probe) is asked only once the file has settled; None
    means the filesystem cannot tell (NFS, SMB), and settling alone decides."""
    if unchanged_for < settle_seconds:
        return False
    return writer_open() is not True


def proxy_job(source: str) -> dict[str, object]:
    """The job the watcher submits for one upload (defaults of the proxy kind)."""
    return {"kind": "proxy", "source": source, "metadata": {"submittedBy": "upload-watcher"}}
