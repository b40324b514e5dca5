"""ffconcat lists that read only the used stretches of a file, as ONE ffmpeg input.

Each stretch is an entry with an inpoint (the concat demuxer seeks to the keyframe before
it and decodes from there; a stretch from the file's start has none) and an outpoint; its
`duration` adds a gap longer than any GOP, so the frames decoded before an inpoint never
share timestamps with the previous stretch.
With -copyts, a frame of the file at source time x reaches the filter graph at time
x - base(entry), exactly, so each piece's trim window can be computed in advance.

One input per angle keeps one decoder per angle (bounded memory, whatever the number of
cuts) and decodes only what is shown, plus a GOP before and a little after each piece.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from spooler.errors import ErrorCode, JobError
from spooler.mediainfo import (
    FORMAT_WHITELIST,
    PROTOCOLS,
    MediaLocation,
    reader_protocols,
    reader_url,
)

MICRO = 1_000_000


def _us_text(us: int) -> str:
    sign = "-" if us < 0 else ""
    return f"{sign}{abs(us) // MICRO}.{abs(us) % MICRO:06d}"


def quote(text: str) -> str:
    """A token for the ffconcat parser: single quotes, a quote as '\\''."""
    return "'" + text.replace("'", "'\\''") + "'"


@dataclass
class ConcatList:
    """The stretches of one file, in the order they will be read."""

    path: MediaLocation  # a local file, or a remote source's gateway URL
    origin: Fraction  # the file's start time: source time 0
    gap: Fraction  # longer than the file's longest GOP
    lines: list[str] = field(default_factory=list)
    elapsed_us: int = 0  # where the next entry starts on the list's own timeline
    starts_us: list[int] = field(default_factory=list)  # where each entry starts on it
    # Each entry's inpoint and outpoint as written (µs, rounded outwards), in source time.
    reads: list[tuple[Fraction, Fraction]] = field(default_factory=list)
    # False: no entry's probe decodes a frame (see add); the input's own probe decodes one.
    probe: bool = True

    def add(self, source_in: Fraction, source_out: Fraction) -> Fraction:
        """Add source [in, out); returns `base`: graph time = source time - base."""
        # From the file's start (no inpoint, below) the demuxer counts from its start time,
        # an integer of microseconds: the same here, not the float's floor.
        in_us = (
            math.floor((source_in + self.origin) * MICRO)
            if source_in > 0
            else round(self.origin * MICRO)
        )
        out_us = math.ceil((source_out + self.origin) * MICRO)
        duration_us = out_us - in_us + math.ceil(self.gap * MICRO)
        start_us = self.elapsed_us
        self.starts_us.append(start_us)
        self.lines += [
            f"file {quote(reader_url(self.path))}",
            # Per file, overriding what the file inherits from the list's own input (which
            # must allow the concat demuxer): a nested ffconcat script or playlist is refused.
            # A remote source's entry alone may use http,tcp (to the loopback gateway).
            f"option format_whitelist {FORMAT_WHITELIST}",
            f"option protocol_whitelist {reader_protocols(self.path)}",
            # The demuxer probes every entry it opens, and the probe decodes the entry's
            # first keyframe (~20 ms at 1080p) only to learn its pixel format, which the
            # input's own probe learns once, from its first frame. An empty codec
            # allow-list refuses the probe its decoder (issue 18: smart's 43 entries 0.84
            # s); ffmpeg logs each refusal (ffmpeg.py drops those lines).
            *(() if self.probe else ("option codec_whitelist none",)),
            # From the file's start: no inpoint, so no seek (the entry's timestamps are the
            # same: the demuxer counts from the file's start time). A seek to that time can
            # miss the first keyframe: an MPEG-TS's video may start after its audio (the
            # file's start time), and its seek then lands a GOP late.
            *((f"inpoint {_us_text(in_us)}",) if source_in > 0 else ()),
            f"outpoint {_us_text(out_us)}",
            f"duration {_us_text(duration_us)}",
        ]
        self.elapsed_us += duration_us
        self.reads.append(
            (Fraction(in_us, MICRO) - self.origin, Fraction(out_us, MICRO) - self.origin)
        )
        return Fraction(in_us - start_us, MICRO) - self.origin

    def boundaries(self) -> list[Fraction]:
        """List times that part each entry's frames from the next one's (one per join).

        Entry k's frames end at its outpoint; entry k+1's start at most a GOP before its
        inpoint, so a `gap` of the longest GOP + 1 s (graph.py) leaves a second with no
        frame between them: each boundary sits half a second into it.
        """
        half = Fraction(1, 2)
        return [Fraction(start, MICRO) - self.gap + half for start in self.starts_us[1:]]

    def __post_init__(self) -> None:
        # One directive per line, the path a single quoted token: no line break can hide a
        # directive of its own in it (sources.py refuses such paths before this).
        if any(ord(c) < 32 or ord(c) == 127 for c in str(self.path)):
            raise JobError(
                ErrorCode.SOURCE_NOT_ALLOWED,
                "a source path with control characters cannot go into an ffconcat list",
            )

    def text(self) -> str:
        return "ffconcat version 1.0\n" + "\n".join(self.lines) + "\n"


def concat_input(list_path: Path) -> list[str]:
    """Input arguments: the list and every file it names may only be plain files.

    `-safe 0`: the list names absolute paths (the resolved source, or /proc/self/fd/N), and
    only unsafe mode allows the per-file `option` directives; the list is written by the
    daemon from resolved paths, never by the job. The list itself may only be read by the
    concat demuxer; each file it names gets the media allow-list (see ConcatList.add).
    """
    return [
        "-f",
        "concat",
        "-safe",
        "0",
        "-protocol_whitelist",
        PROTOCOLS,
        "-format_whitelist",
        "concat",
        "-i",
        f"file:{list_path}",
    ]
