"""Each read's video chain in the reencode graph: which source frames fill its N frames.

Two chains, the same frames:
- exact: where the read's source frames fall one to an output frame (a constant-rate
  source at the output rate, the usual camera file), a trim on bounds midway between
  source frames keeps exactly them, and settb/setpts number them 0..N-1 as fps would.
- resampled: otherwise (other rates, variable rate, a source a hair short, reads that a
  transition blends, which need the fps filter's constant-rate link), fps picks for each
  output frame the source frame nearest its time, or the last one before, held, where a
  variable-rate source misses frames; tpad/trim make it exactly N frames.

Why not fps everywhere (issue 18): fps holds two frames, and when the trim after it closes
its output it returns without freeing them (vf_fps.c: FF_FILTER_FORWARD_STATUS_BACK comes
first; the frames go in uninit, when the whole graph ends), and tpad keeps its last frame
likewise. Every finished branch kept two decoded pictures to the end of the job: 2.8 MB
per cut at 720p, 3 GB at 1,000 cuts.

Pure: source times from the packet index in, filter text out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from spooler.export.commands import fmt, rate_text
from spooler.mediainfo import VideoIndex

# The fps filter sees each time rounded to the stream's time base (twice: the list's offset
# and setpts) and to microseconds (the graph text): a source frame nearer than this to the
# middle between two output frames could go either way there, so such a read keeps fps.
ROUNDING_US = 4


@dataclass(frozen=True)
class Window:
    """Source times [start, end) holding exactly a read's frames, one per output frame."""

    start: Fraction
    end: Fraction


def exact_window(
    pts: Sequence[int], index: VideoIndex, src_start: Fraction, frames: int, fps: Fraction
) -> Window | None:
    """The window if output frame k of the read is source frame k of it, for every k.

    Output frame k shows the source frame whose time is within half a frame of
    src_start + k/fps (fps=...:round=near; exactly half way: the earlier one). None if an
    output frame has no such source frame or several, or if one lies so near half way that
    the fps filter's rounding could pick otherwise. `pts`: the source's frame timestamps,
    sorted (display order).
    """
    half = 1 / (2 * fps)
    tb, origin = index.time_base, index.origin
    first = bisect.bisect_left(pts, (src_start - half + origin) / tb)
    stop = bisect.bisect_left(pts, (src_start + frames / fps - half + origin) / tb)
    if stop - first != frames or frames == 0:
        return None
    slack = (2 * tb + Fraction(ROUNDING_US, 1_000_000)) * fps  # in output frames
    for k in range(frames):
        at = (index.time(pts[first + k]) - src_start) * fps + Fraction(1, 2)
        if math.floor(at) != k or at - k < slack or k + 1 - at < slack:
            return None
    head, tail = index.time(pts[first]), index.time(pts[stop - 1])
    before = index.time(pts[first - 1]) if first > 0 else head - 2 * half
    after = index.time(pts[stop]) if stop < len(pts) else tail + 2 * half
    return Window((before + head) / 2, (tail + after) / 2)


def exact_chain(window: Window, base: Fraction, fps: Fraction) -> list[str]:
    """Keep the window's frames (graph time = source time - base), numbered 0..N-1."""
    return [
        f"trim=start={fmt(window.start - base)}:end={fmt(window.end - base)}",
        f"settb={rate_text(1 / fps)}",
        "setpts=N",
    ]


def resampled_chain(
    seek: Fraction, src_start: Fraction, src_end: Fraction, frames: int, base: Fraction,
    fps: Fraction,
) -> list[str]:  # fmt: skip
    """fps over source [seek, src_end): output frame k shows the source frame nearest
    src_start + k/fps, or the last one before it (a variable-rate source)."""
    return [
        f"trim=start={fmt(seek - base)}:end={fmt(src_end - base)}",
        f"setpts=PTS-{fmt(src_start - base)}/TB",
        f"fps=fps={rate_text(fps)}:start_time=0:round=near",
        # A source a hair short still fills its last frames; more would hide a real
        # shortfall, which verification then reports as a short output.
        "tpad=stop=2:stop_mode=clone",
        f"trim=end_frame={frames}",
    ]
