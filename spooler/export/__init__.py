"""The multicam `export` job kind: an edit list of angles -> one verified output file.

models (the job file) -> sources (resolve + probe) -> timeline (pure, frame-quantised)
-> plan (pure: ffmpeg arguments, or a stream-copy remux plan) -> kind (runs and verifies).
"""

# The kind registry imports this package's kind; loading the registry first keeps
# `import spooler.export...` from re-entering a half-initialised module.
import spooler.kinds  # noqa: F401  # isort: skip
from spooler.export.kind import ExportKind
from spooler.export.models import ExportJob

__all__ = ["ExportJob", "ExportKind"]
