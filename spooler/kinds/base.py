"""The kind contract, under its old name: it lives in spooler.jobkind (see there why)."""

from spooler.ffmpeg import FfmpegResult
from spooler.jobkind import JobContext, JobKind, JobSpec, SpecModel, Step

__all__ = ["FfmpegResult", "JobContext", "JobKind", "JobSpec", "SpecModel", "Step"]
