"""Warm-up pictures that no read shows, dropped before the decoder (issue 18).

Each read of an angle (an ffconcat entry) is decoded from the keyframe before it, and the
frames before the first one it shows are decoded only as references for what follows. A
non-reference picture (`nal_ref_idc` 0: a B-frame, mostly) is a reference for nothing, so
such a packet is dropped before the decoder (`-bsf:v noise=drop=...` on the input, by its
position in the file): every frame shown decodes to the same pixels (the tests compare),
and on B-frame footage a third to a half of the warm-up is not decoded. Smart render
(smart.py) and the reencode (reencode.py) each say which packets their reads show; a
packet that any read of the input shows is never dropped, and a source whose packets'
positions are unknown (scanned, remote) drops none.

Pure: the packet index and the reads in, ffmpeg options out; the one read of the file is
the shell's NonReference (sources.non_reference_packets).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from fractions import Fraction

from spooler.export.graph import balanced_sum
from spooler.export.probed import Source
from spooler.mediainfo import VideoIndex

# Which of an angle's packets (decode indices) are non-reference pictures: the one read the
# planner asks of the shell (sources.non_reference_packets); None in pure tests.
NonReference = Callable[[Source, list[int]], frozenset[int]]
# Packets one command's drop expressions name at most, all inputs together. ffmpeg evaluates
# an input's expression for every packet it reads (~30 ns a term: it pays for itself up to
# thousands of parts an input); each is one argument, which Linux caps at 128 KiB (~22
# characters a term), and all share the command line's 2 MiB.
MAX_DROPPED = 4000
# Candidates looked at per named packet of the budget: bounds the file reads (one per
# candidate) on footage with few non-reference pictures.
LOOKED_AT_PER_DROP = 4


def entry_packets(index: VideoIndex, reads: list[tuple[Fraction, Fraction]]) -> list[range]:
    """The decode indices each read (inpoint, outpoint in source time) decodes: from the
    keyframe at or before its inpoint to the first packet decoded at or past its outpoint.
    What is read only bounds what is worth naming: a named packet never read costs a term."""
    keys = sorted((p.pts, i) for i, p in enumerate(index.packets) if p.keyframe)
    key_pts = [pts for pts, _ in keys]
    decode_times = [p.dts for p in index.packets]
    ranges = []
    for read_in, read_out in reads:
        at = bisect.bisect_right(key_pts, math.floor((read_in + index.origin) / index.time_base))
        start = keys[at - 1][1] if at > 0 else 0
        stop = bisect.bisect_left(
            decode_times, math.ceil((read_out + index.origin) / index.time_base)
        )
        ranges.append(range(start, max(start, stop)))
    return ranges


def drop_options(
    unshown: dict[int, tuple[Source, set[int]]],
    non_reference: NonReference,
) -> dict[int, list[str]]:
    """Per input (its index in the command's inputs): the option that drops the
    non-reference pictures among `unshown` (decode indices of its source that its reads
    decode and none shows), MAX_DROPPED of them at most in all (a subset is as safe)."""
    drops: dict[int, list[str]] = {}
    budget = MAX_DROPPED
    for k, (source, packets) in sorted(unshown.items()):
        index = source.index
        if budget <= 0 or index is None or not packets:
            continue
        looked_at = sorted(packets)[: budget * LOOKED_AT_PER_DROP]
        positions = sorted(index.packets[i].pos for i in non_reference(source, looked_at))
        if not positions or positions[0] < 0:
            continue
        positions = positions[:budget]
        budget -= len(positions)
        # The bsf list separates filters by commas: the expression's own are escaped.
        terms = [f"eq(pos\\,{pos})" for pos in positions]
        drops[k] = ["-bsf:v", f"noise=drop={balanced_sum(terms)}"]
    return drops
