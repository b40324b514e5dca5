"""The multicam `export` job kind: an edit list of angles -> one verified output file.

models (the job file) -> sources (resolve + probe) -> timeline (pure, frame-quantised)
-> plan (pure: ffmpeg arguments, or a stream-copy remux plan) -> kind (runs and verifies).
"""

from spooler.export.kind import ExportKind
from spooler.export.models import ExportJob

__all__ = ["ExportJob", "ExportKind"]
