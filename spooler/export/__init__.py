"""The multicam `export` job kind: an edit list of angles -> one verified output file.

models (the job file) -> sources (resolve + probe) -> timeline (pure, frame-quantised)
-> plan (pure: ffmpeg arguments, or a stream-copy remux plan) -> kind (runs and verifies).
docs/architecture.md ("The export package") lists the modules and which are pure.

Importing the package loads only the job model: `ExportKind`, which loads ffmpeg and
PyAV, is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spooler.export.models import ExportJob

if TYPE_CHECKING:
    from spooler.export.kind import ExportKind

__all__ = ["ExportJob", "ExportKind"]


def __getattr__(name: str) -> Any:
    if name == "ExportKind":
        from spooler.export.kind import ExportKind

        return ExportKind
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
