"""Where a stream copy of a constant-rate video can start and stop, in frame numbers.

Pure: works on the packet index the probe made (decode order, timestamps, keyframe and
IDR flags). A copy may start at a clean IDR keyframe (no later packet is shown before it)
and stop before a packet where everything decoded so far is shown before everything
after (no B-frame loses a reference). The smart render copies what lies between such
points and encodes the rest.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from spooler.mediainfo import VideoIndex


@dataclass(frozen=True)
class Frames:
    """An angle's video as constant-rate frames: display frame i has pts first + i*step."""

    first: int
    step: int
    count: int
    heads: tuple[int, ...]  # display indices of clean IDR keyframes, ascending
    packet_of_head: dict[int, int]  # display index of a head -> its decode index
    tails: tuple[int, ...]  # decode indices where a copy can stop, ascending
    shown_before: tuple[int, ...]  # per tail: frames [.., shown_before) are shown before it
    bframes: int = 0  # longest run of frames decoded after a later one (B-frames)
    reorder: int = 0  # frames between decoding and showing at the start (2: B-pyramid)

    @classmethod
    def of(cls, index: VideoIndex) -> Frames | None:
        """None if the timestamps are not one constant step (variable frame rate)."""
        pts = sorted(p.pts for p in index.packets)
        if len(pts) < 2:
            return None
        step = pts[1] - pts[0]
        if step <= 0 or any(b - a != step for a, b in itertools.pairwise(pts)):
            return None
        display = [(p.pts - pts[0]) // step for p in index.packets]
        heads = sorted((display[i], i) for i in index.heads() if index.packets[i].idr)
        suffix_min = list(itertools.accumulate(reversed(display), min))[::-1]
        tails = index.tails()
        shown = [suffix_min[i] if i < len(display) else len(display) for i in tails]
        run = longest = 0
        latest = -1
        for shown_at in display:
            run = run + 1 if shown_at < latest else 0
            longest, latest = max(longest, run), max(latest, shown_at)
        first = index.packets[0]
        return cls(
            pts[0],
            step,
            len(pts),
            tuple(h for h, _ in heads),
            dict(heads),
            tuple(tails),
            tuple(shown),
            longest,
            max(0, (first.pts - first.dts) // step),
        )


@dataclass(frozen=True)
class Part:
    """Source frames [start, stop) of a piece: copied (with its packets) or encoded."""

    kind: str  # "copy" | "encode"
    start: int
    stop: int
    head_packet: int = 0  # copy: decode index of the IDR it starts at
    stop_packet: int = 0  # copy: decode index it stops before

    @property
    def frames(self) -> int:
        return self.stop - self.start


def split_piece(frames: Frames, start: int, stop: int, joinable: bool) -> list[Part]:
    """Copy as much of source frames [start, stop) as can be copied exactly (pure)."""
    if not joinable:
        return [Part("encode", start, stop)]
    at = bisect.bisect_left(frames.heads, start)
    if at == len(frames.heads) or frames.heads[at] >= stop:
        return [Part("encode", start, stop)]
    head = frames.heads[at]
    head_packet = frames.packet_of_head[head]
    # The last clean stop that shows nothing at or past `stop` (shown_before only grows).
    last = bisect.bisect_right(frames.shown_before, stop) - 1
    if last < 0 or frames.tails[last] <= head_packet or frames.shown_before[last] <= head:
        return [Part("encode", start, stop)]
    copied_to = frames.shown_before[last]
    parts = [Part("encode", start, head)] if head > start else []
    parts.append(Part("copy", head, copied_to, head_packet, frames.tails[last]))
    if copied_to < stop:
        parts.append(Part("encode", copied_to, stop))
    return parts
