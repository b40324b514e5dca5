"""What a plan is made of: ffmpeg commands, copy segments, snapped cuts (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from spooler.mediainfo import FORMAT_WHITELIST, MediaLocation, reader_protocols, reader_url

MUXERS = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm"}
MIME = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
}


@dataclass(frozen=True)
class PlanPaths:
    """Where the plan may write (temporary files the kind got from ctx.temp_path)."""

    output: Path
    audio: Path
    graph: Path
    lists: tuple[Path, ...]  # ffconcat lists: one per angle, the audio bed, its ambient track
    renditions: tuple[Path, ...] = ()  # one per job.renditions entry, same order


@dataclass(frozen=True)
class PlannedOutput:
    """One more file the plan writes, and what verification expects of it."""

    name: str  # the published name
    temp: Path
    role: str  # "rendition" (status OutputInfo.role)
    mime_type: str
    width: int | None  # None: no video stream expected
    height: int | None
    audio: bool


@dataclass(frozen=True)
class Command:
    step: str
    args: list[str]
    expected_seconds: float
    files: dict[Path, str] = field(default_factory=dict)  # written before ffmpeg runs
    parallel: bool = False  # may run at the same time as the parallel commands next to it
    weight: float | None = None  # share of the progress bar (default: expected_seconds)


@dataclass(frozen=True)
class CopySegment:
    """Packets [head, stop) in decode order of one source, shifted by `shift` seconds."""

    label: str
    angle: str
    path: MediaLocation  # the source's reader (a local file, or the gateway's URL)
    head_dts: int
    stop_dts: int | None  # None: to the end of the stream
    shift: Fraction  # output time = source time + shift


@dataclass(frozen=True)
class EncodedPart:
    """Frames [first, first + count) of an encoded piece file (smart render; frame n of the
    file has pts n / rate), placed so that frame `first` is at output pts `pts` and each
    next one `step` later (ticks of the track's time base). The part starts with an IDR
    and references nothing outside itself, so its packets are contiguous in the file."""

    label: str
    angle: str
    path: Path
    first: int
    count: int
    pts: int
    step: int
    rate: Fraction


VideoPart = CopySegment | EncodedPart


@dataclass(frozen=True)
class AudioCopy:
    """Audio packets of one source copied as they are: source [start, end) -> output 0.

    Used in copy mode when the master angle's audio already has the output's codec:
    cut once at packet boundaries (an AAC packet is 21 ms: at most 11 ms off), no encode.
    """

    path: MediaLocation
    start: Fraction  # source time
    end: Fraction


@dataclass(frozen=True)
class Snap:
    label: str
    angle: str
    requested: float
    actual: float

    @property
    def delta(self) -> float:
        return self.actual - self.requested


@dataclass(frozen=True)
class Plan:
    mode: Literal["reencode", "copy", "smart"]
    reason: str
    duration: Fraction  # expected output duration, seconds
    fps: Fraction
    width: int
    height: int
    want_audio: bool
    mime_type: str
    commands: list[Command]
    copy_segments: list[VideoPart] = field(default_factory=list)  # what the remux writes
    copy_audio: Path | AudioCopy | None = None  # where the remux takes audio packets from
    template: MediaLocation | None = None  # the source whose stream the remuxed track copies
    remux_weight: float = 0.0  # the in-process copy's share of the progress bar
    intermediates: list[Path] = field(default_factory=list)  # removed once verified
    snaps: list[Snap] = field(default_factory=list)
    preflight: dict[str, Any] = field(default_factory=dict)
    extra_outputs: list[PlannedOutput] = field(default_factory=list)  # renditions

    @property
    def tolerance(self) -> float:
        """Verification's allowed |duration - expected| and A/V difference: one frame (the
        last piece of a copy ends where its angle's frames end: within half of one)."""
        return float(1 / self.fps) + 0.001


def fmt(t: Fraction | float) -> str:
    """Seconds for ffmpeg: fixed point, microseconds, never exponent notation."""
    return f"{float(t):.6f}"


def input_args(
    path: MediaLocation, start: Fraction | None = None, duration: Fraction | None = None
) -> list[str]:
    """An input: a plain file with only the file protocol (never a bare user string), or
    the gateway's URL with only http,tcp."""
    args: list[str] = []
    if start is not None and start > 0:
        args += ["-ss", fmt(start)]
    if duration is not None:
        args += ["-t", fmt(duration)]
    return [
        *args,
        "-protocol_whitelist",
        reader_protocols(path),
        "-format_whitelist",
        FORMAT_WHITELIST,
        "-i",
        reader_url(path),
    ]


def rate_text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"
