"""The edit as pure data: switches -> pieces, clipping to the range, and frame quantisation.

Times are kept as exact Fractions of the JSON floats, and every cut is rounded to an output
frame ONCE from its absolute time (never by adding rounded durations), so 5,000 cuts drift
by nothing: piece i always spans frames [round(t_i * fps), round(t_{i+1} * fps)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from spooler.export.models import ExportJob


@dataclass(frozen=True)
class Piece:
    """One stretch of timeline on one angle; `label` names its origin in the job file."""

    angle: str
    start: Fraction
    end: Fraction
    label: str


@dataclass(frozen=True)
class FramePiece:
    """A piece quantised to output frames: timeline frames [first, stop)."""

    angle: str
    first: int
    stop: int
    label: str

    @property
    def frames(self) -> int:
        return self.stop - self.first


def edit_pieces(job: ExportJob) -> list[Piece]:
    """The job's edit in one form, whichever form the file used (ExportJob.edit_segments)."""
    name, segments = job.edit_segments()
    return [
        Piece(seg.angle, Fraction(seg.start), Fraction(seg.end), f"{name}[{i}]")
        for i, seg in enumerate(segments)
    ]


def clip(pieces: list[Piece], start: Fraction, end: Fraction) -> list[Piece]:
    """The part of the edit inside [start, end)."""
    out: list[Piece] = []
    for piece in pieces:
        lo, hi = max(piece.start, start), min(piece.end, end)
        if hi > lo:
            out.append(Piece(piece.angle, lo, hi, piece.label))
    return out


def merge_same_angle(pieces: list[Piece]) -> list[Piece]:
    """Adjacent pieces on the same angle are one piece: no cut, no seam."""
    out: list[Piece] = []
    for piece in pieces:
        if out and out[-1].angle == piece.angle and out[-1].end == piece.start:
            out[-1] = Piece(piece.angle, out[-1].start, piece.end, out[-1].label)
        else:
            out.append(piece)
    return out


def frame_index(t: Fraction, fps: Fraction) -> int:
    """Nearest output frame boundary to `t`; exact halves round up (no banker's rounding)."""
    return math.floor(t * fps + Fraction(1, 2))


def quantise(pieces: list[Piece], fps: Fraction) -> list[FramePiece]:
    """Round every cut to an output frame once; pieces shorter than half a frame vanish."""
    out: list[FramePiece] = []
    for piece in pieces:
        first, stop = frame_index(piece.start, fps), frame_index(piece.end, fps)
        if stop <= first:
            continue
        if out and out[-1].angle == piece.angle:
            out[-1] = FramePiece(piece.angle, out[-1].first, stop, out[-1].label)
        else:
            out.append(FramePiece(piece.angle, first, stop, piece.label))
    return out


def job_pieces(job: ExportJob) -> list[Piece]:
    """The edit of `job`, clipped to its range and with same-angle neighbours merged."""
    pieces = edit_pieces(job)
    if job.range is not None:
        pieces = clip(pieces, Fraction(job.range.start), Fraction(job.range.end))
    return merge_same_angle(pieces)
