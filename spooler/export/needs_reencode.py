"""What in an export job changes the picture itself, so that no frame it touches can be
stream-copied: a transition played in the exported part, a watermark, renditions (encoded
from the decoded frames). Pure, and the one statement of the rule: validation refuses these
with mode copy (ExportJob, through `copy_refusal`), and auto and smart fall back to
re-encoding with the same findings (`reasons`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_core import ValidationError

from spooler.export.rules import TIME_EPSILON, fail

if TYPE_CHECKING:  # models.py calls this module from its validator
    from spooler.export.models import ExportJob


@dataclass(frozen=True)
class Finding:
    """One thing the job asks of decoded frames, located in the job file."""

    what: str  # "transition", "watermark" or "renditions"
    path: tuple[int | str, ...]
    code: str  # the error code when mode is copy
    refusal: str  # the error message when mode is copy
    reason: str  # why auto or smart re-encodes
    value: Any


def findings(job: ExportJob) -> list[Finding]:
    """Everything in `job` that needs re-encoding, in file order."""
    found: list[Finding] = []
    name, segments = job.edit_segments()
    lo = job.range.start if job.range else segments[0].start
    hi = job.range.end if job.range else segments[-1].end
    for j in range(1, len(segments)):
        seg = segments[j]
        spec = seg.transition or job.transition
        # The same angle again is no cut: nothing to blend there.
        if seg.angle == segments[j - 1].angle or spec is None or spec.type == "cut":
            continue
        half = spec.duration / 2
        # Centred on the cut; only a window inside the exported part is played.
        if seg.start - half < hi - TIME_EPSILON and seg.start + half > lo + TIME_EPSILON:
            own = seg.transition is not None
            found.append(
                Finding(
                    "transition",
                    (name, j, "transition") if own else ("transition",),
                    "needs_reencode",
                    f"a {spec.type} cannot be stream-copied (use mode reencode or auto)",
                    f"{f'{name}[{j}].transition' if own else 'transition'} ({spec.type}) "
                    "needs re-encoding",
                    spec.type,
                )
            )
    if job.watermark is not None:
        found.append(
            Finding(
                "watermark",
                ("watermark",),
                "needs_reencode",
                "a watermark cannot be stream-copied (use mode reencode or auto)",
                "a watermark needs re-encoding",
                None,
            )
        )
    if job.renditions:
        found.append(
            Finding(
                "renditions",
                ("renditions",),
                "copy_option",
                "renditions are encoded from the decoded frames: use mode reencode or auto",
                "renditions need the decoded frames",
                None,
            )
        )
    return found


def copy_refusal(job: ExportJob) -> ValidationError | None:
    """The located error for mode copy when the job needs re-encoding (its first finding)."""
    if job.mode != "copy":
        return None
    first = next(iter(findings(job)), None)
    return None if first is None else fail(first.path, first.code, first.refusal, first.value)


def reasons(job: ExportJob) -> list[str]:
    """Why the job's own content rules out copying frames (auto's and smart's wording):
    the first transition (and how many more), the watermark, the renditions."""
    found = findings(job)
    cuts = [f.reason for f in found if f.what == "transition"]
    more = [f"and {len(cuts) - 1} more transition(s)"] if cuts[1:] else []
    return cuts[:1] + more + [f.reason for f in found if f.what != "transition"]
