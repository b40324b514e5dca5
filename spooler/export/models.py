"""The export job as the web app writes it: pydantic models, camelCase JSON.

Sync-offset convention (one sign, used everywhere): an angle's `syncOffset` is the time in
its SOURCE FILE that shows timeline time 0, so  source_time = timeline_time + syncOffset.
A camera that started recording 3 s before the timeline's zero has syncOffset = 3.0.
The same rule holds for an external audio file's `offset`.

Cross-field checks raise a ValidationError whose location is the offending field, so
`parse_job` reports "segments[7].end: must be greater than start" rather than "(root)".
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from spooler.config import ExportSettings
from spooler.kinds.base import JobSpec, SpecModel

# Seconds are compared with this slack: JSON floats written by a browser are not exact.
TIME_EPSILON = 1e-6

_ANGLE_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# Anything that libavformat could read as a protocol ("concat:", "http:", "file:", ...).
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _fail(path: tuple[int | str, ...], code: str, message: str, value: Any) -> ValidationError:
    return ValidationError.from_exception_data(
        "ExportJob",
        [InitErrorDetails(type=PydanticCustomError(code, message), loc=path, input=value)],
    )


def check_source_syntax(source: str) -> str | None:
    """Why `source` is not an acceptable media-root-relative path, or None if it is.

    Pure and shared by the model (rejected at parse time) and sources.py (defence in depth).
    """
    if not source or source != source.strip():
        return "must be a non-empty path without surrounding spaces"
    if source.startswith(("https://", "http://")):
        return "URL sources are not supported yet (use a path inside a media root)"
    if _PROTOCOL.match(source):
        return "must be a plain path, not a protocol or URL"
    if source.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", source):
        return "must be relative to a media root, not absolute"
    if any(ord(c) < 32 or c == "\\" for c in source):
        return "must not contain control characters or backslashes"
    parts = source.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "must not contain empty, '.' or '..' components"
    if any(part.startswith("-") for part in parts):
        return "no path component may start with '-'"
    return None


class Angle(SpecModel):
    id: str = Field(pattern=_ANGLE_ID, description="Referenced by segments, switches and audio.")
    source: str = Field(max_length=1024, description="Path relative to a media root.")
    sync_offset: float = Field(
        0.0, ge=-86_400, le=86_400, description="Source time shown at timeline 0 (seconds)."
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        problem = check_source_syntax(value)
        if problem:
            raise PydanticCustomError("source_path", problem)
        return value


class Segment(SpecModel):
    angle: str
    start: float = Field(ge=0, description="Timeline seconds, inclusive.")
    end: float = Field(gt=0, description="Timeline seconds, exclusive.")


class Switch(SpecModel):
    at: float = Field(ge=0, description="Timeline seconds at which `angle` takes over.")
    angle: str


class AngleAudio(SpecModel):
    """One continuous track from an angle's own audio (the default: the first angle)."""

    mode: Literal["angle"] = "angle"
    angle: str | None = Field(None, description="Default: the first angle.")


class ExternalAudio(SpecModel):
    """An external recording (e.g. a lavalier mic) aligned by its own offset."""

    mode: Literal["external"]
    source: str = Field(max_length=1024)
    offset: float = Field(0.0, ge=-86_400, le=86_400, description="Source time at timeline 0.")
    gain_db: float = Field(0.0, ge=-60, le=24)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        problem = check_source_syntax(value)
        if problem:
            raise PydanticCustomError("source_path", problem)
        return value


class FollowAudio(SpecModel):
    """Audio of whichever angle is on screen, with 5 ms fades at each cut (no clicks)."""

    mode: Literal["follow"]


class NoAudio(SpecModel):
    mode: Literal["none"]


AudioSpec = Annotated[
    AngleAudio | ExternalAudio | FollowAudio | NoAudio, Field(discriminator="mode")
]


class KeepSize(SpecModel):
    mode: Literal["keep"] = "keep"


class HeightSize(SpecModel):
    """A target height (2160, 1080, 720, 480, ...); the width keeps the first angle's aspect."""

    mode: Literal["height"]
    height: int = Field(ge=16, le=4320, multiple_of=2)


class ExactSize(SpecModel):
    mode: Literal["exact"]
    width: int = Field(ge=16, le=7680, multiple_of=2)
    height: int = Field(ge=16, le=4320, multiple_of=2)
    fit: Literal["pad", "crop"] = "pad"


SizeSpec = Annotated[KeepSize | HeightSize | ExactSize, Field(discriminator="mode")]

VideoCodec = Literal["h264", "hevc", "vp9", "av1", "copy"]
Container = Literal["mp4", "mov", "mkv", "webm"]

CONTAINER_VIDEO: dict[str, frozenset[str]] = {
    "mp4": frozenset({"h264", "hevc", "vp9", "av1"}),
    "mov": frozenset({"h264", "hevc"}),
    "mkv": frozenset({"h264", "hevc", "vp9", "av1"}),
    "webm": frozenset({"vp9", "av1"}),
}
CONTAINER_AUDIO: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "opus"}),
    "mov": frozenset({"aac"}),
    "mkv": frozenset({"aac", "opus"}),
    "webm": frozenset({"opus"}),
}
CRF_RANGE: dict[str, tuple[int, int]] = {"h264": (0, 51), "hevc": (0, 51), "vp9": (0, 63), "av1": (0, 63)}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow")  # fmt: skip
# vp9: libvpx -cpu-used 0..8; av1: SVT-AV1 -preset 0..13 (higher is faster).
NUMERIC_PRESETS: dict[str, range] = {"vp9": range(0, 9), "av1": range(0, 14)}
EXTENSIONS: dict[str, str] = {"mp4": ".mp4", "mov": ".mov", "mkv": ".mkv", "webm": ".webm"}

_FPS_TEXT = re.compile(r"^([1-9][0-9]{0,5})(?:/([1-9][0-9]{0,4}))?$")


def parse_fps(value: float | str) -> Fraction:
    """30 -> 30, 29.97 -> 30000/1001, "24000/1001" -> 24000/1001."""
    if isinstance(value, str):
        match = _FPS_TEXT.match(value)
        if not match:
            raise ValueError("must be 'keep', a number or a ratio like '30000/1001'")
        return Fraction(int(match[1]), int(match[2] or 1))
    return Fraction(value).limit_denominator(1001)


class OutputSpec(SpecModel):
    container: Container = "mp4"
    video_codec: VideoCodec = "h264"
    crf: int | None = Field(None, ge=0, le=63, description="Quality; exclusive with videoBitrateKbps.")
    preset: str | None = Field(None, max_length=16)
    video_bitrate_kbps: int | None = Field(None, ge=50, le=500_000)
    size: SizeSpec = KeepSize()
    fps: Literal["keep"] | float | str = Field("keep", description="'keep', 30, 29.97, '30000/1001'")
    audio_codec: Literal["aac", "opus"] | None = Field(None, description="Default: per container.")
    audio_bitrate_kbps: int = Field(192, ge=16, le=1024)
    faststart: bool = Field(True, description="mp4/mov: index first so browsers start at once.")
    file_name: str = Field("export", min_length=1, max_length=200)

    @field_validator("fps")
    @classmethod
    def _fps(cls, value: float | str) -> float | str:
        if value == "keep":
            return value
        try:
            rate = parse_fps(value)
        except (ValueError, ZeroDivisionError) as exc:
            raise PydanticCustomError("fps", str(exc)) from exc
        if not 1 <= rate <= 240:
            raise PydanticCustomError("fps", "must be between 1 and 240 frames per second")
        return value

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or "\x00" in value:
            raise PydanticCustomError("file_name", "must be a file name, not a path")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> OutputSpec:
        codec = self.video_codec
        if codec != "copy" and codec not in CONTAINER_VIDEO[self.container]:
            raise _fail(("videoCodec",), "codec_container",
                        f"{codec} cannot be stored in {self.container}", codec)  # fmt: skip
        if self.audio_codec and self.audio_codec not in CONTAINER_AUDIO[self.container]:
            raise _fail(("audioCodec",), "codec_container",
                        f"{self.audio_codec} cannot be stored in {self.container}",
                        self.audio_codec)  # fmt: skip
        if self.crf is not None and self.video_bitrate_kbps is not None:
            raise _fail(("crf",), "quality_conflict",
                        "give crf or videoBitrateKbps, not both", self.crf)  # fmt: skip
        if codec == "copy":
            for name, given in (("crf", self.crf), ("preset", self.preset),
                                ("videoBitrateKbps", self.video_bitrate_kbps)):  # fmt: skip
                if given is not None:
                    raise _fail((name,), "copy_option", f"has no meaning with videoCodec copy", given)
            if self.size.mode != "keep":
                raise _fail(("size",), "copy_option", "videoCodec copy keeps the source size", None)
            if self.fps != "keep":
                raise _fail(("fps",), "copy_option", "videoCodec copy keeps the source rate", self.fps)
            return self
        if self.crf is not None:
            low, high = CRF_RANGE[codec]
            if not low <= self.crf <= high:
                raise _fail(("crf",), "crf_range",
                            f"must be between {low} and {high} for {codec}", self.crf)  # fmt: skip
        if self.preset is not None:
            allowed = (X26X_PRESETS if codec in ("h264", "hevc")
                       else tuple(str(n) for n in NUMERIC_PRESETS[codec]))  # fmt: skip
            if self.preset not in allowed:
                raise _fail(("preset",), "preset",
                            f"must be one of {', '.join(allowed)} for {codec}", self.preset)  # fmt: skip
        return self

    @property
    def fps_value(self) -> Fraction | None:
        return None if self.fps == "keep" else parse_fps(self.fps)

    @property
    def audio_codec_value(self) -> str:
        return self.audio_codec or ("opus" if self.container == "webm" else "aac")

    @property
    def safe_file_name(self) -> str:
        """The file name made safe: ASCII letters, digits, '.', '_' and '-', the container's
        extension, no leading dot or dash (never hidden, never read as an option)."""
        text = unicodedata.normalize("NFKD", self.file_name).encode("ascii", "ignore").decode()
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
        ext = EXTENSIONS[self.container]
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
        stem = stem.strip("._-")[:100] or "export"
        return stem + ext


Mode = Literal["reencode", "copy", "auto"]


class TimeRange(SpecModel):
    start: float = Field(ge=0)
    end: float = Field(gt=0)


class ExportJob(JobSpec):
    """A multicam export: which angle is on screen when, what audio, and how to encode."""

    kind: Literal["export"] = "export"
    angles: list[Angle] = Field(min_length=1)
    segments: list[Segment] | None = Field(None, description="Ordered, contiguous, non-overlapping.")
    switches: list[Switch] | None = Field(None, description="Angle changes; needs `end`.")
    end: float | None = Field(None, gt=0, description="Timeline end, with `switches` only.")
    range: TimeRange | None = Field(None, description="Export only this part of the timeline.")
    audio: AudioSpec = AngleAudio()
    output: OutputSpec = OutputSpec()
    mode: Mode = Field("auto", description="reencode: exact; copy: snap to keyframes; auto: copy if exact.")

    @model_validator(mode="after")
    def _edit(self) -> ExportJob:
        ids = [angle.id for angle in self.angles]
        for index, angle_id in enumerate(ids):
            if angle_id in ids[:index]:
                raise _fail(("angles", index, "id"), "duplicate_angle",
                            f"angle id {angle_id!r} is used twice", angle_id)  # fmt: skip
        known = set(ids)
        if (self.segments is None) == (self.switches is None):
            raise _fail(("segments",), "edit_form", "give either segments or switches (+ end)", None)
        if self.segments is not None:
            self._check_segments(self.segments, known)
            timeline = (self.segments[0].start, self.segments[-1].end)
        else:
            assert self.switches is not None
            timeline = self._check_switches(self.switches, known)
        if self.range is not None:
            if self.range.end <= self.range.start + TIME_EPSILON:
                raise _fail(("range", "end"), "range_order", "must be greater than range.start",
                            self.range.end)  # fmt: skip
            if self.range.start < timeline[0] - TIME_EPSILON or self.range.end > timeline[1] + TIME_EPSILON:
                raise _fail(("range",), "range_outside",
                            f"must lie within the timeline {timeline[0]:g}-{timeline[1]:g} s",
                            None)  # fmt: skip
        if isinstance(self.audio, AngleAudio) and self.audio.angle is not None \
                and self.audio.angle not in known:  # fmt: skip
            raise _fail(("audio", "angle"), "unknown_angle",
                        f"{self.audio.angle!r} is not one of the angles", self.audio.angle)  # fmt: skip
        if self.output.video_codec == "copy" and self.mode == "reencode":
            raise _fail(("output", "videoCodec"), "copy_option",
                        "copy needs mode copy or auto", "copy")  # fmt: skip
        return self

    def _check_segments(self, segments: list[Segment], known: set[str]) -> None:
        if not segments:
            raise _fail(("segments",), "too_short", "needs at least one segment", segments)
        for index, seg in enumerate(segments):
            if seg.angle not in known:
                raise _fail(("segments", index, "angle"), "unknown_angle",
                            f"{seg.angle!r} is not one of the angles", seg.angle)  # fmt: skip
            if seg.end <= seg.start + TIME_EPSILON:
                raise _fail(("segments", index, "end"), "segment_order",
                            "must be greater than start", seg.end)  # fmt: skip
            if index and abs(seg.start - segments[index - 1].end) > TIME_EPSILON:
                kind = "overlaps" if seg.start < segments[index - 1].end else "leaves a gap after"
                raise _fail(("segments", index, "start"), "not_contiguous",
                            f"{kind} the previous segment (which ends at "
                            f"{segments[index - 1].end:g} s)", seg.start)  # fmt: skip
        if self.end is not None:
            raise _fail(("end",), "edit_form", "is only used with switches", self.end)

    def _check_switches(self, switches: list[Switch], known: set[str]) -> tuple[float, float]:
        if not switches:
            raise _fail(("switches",), "too_short", "needs at least one switch", switches)
        for index, switch in enumerate(switches):
            if switch.angle not in known:
                raise _fail(("switches", index, "angle"), "unknown_angle",
                            f"{switch.angle!r} is not one of the angles", switch.angle)  # fmt: skip
            if index and switch.at <= switches[index - 1].at + TIME_EPSILON:
                raise _fail(("switches", index, "at"), "switch_order",
                            "must be later than the previous switch", switch.at)  # fmt: skip
        if self.end is None:
            raise _fail(("end",), "missing", "is required with switches", None)
        if self.end <= switches[-1].at + TIME_EPSILON:
            raise _fail(("end",), "switch_order", "must be later than the last switch", self.end)
        return switches[0].at, self.end

    @property
    def audio_angle(self) -> str | None:
        """The angle whose audio is the continuous track, for mode 'angle'."""
        if isinstance(self.audio, AngleAudio):
            return self.audio.angle or self.angles[0].id
        return None

    def angle(self, angle_id: str) -> Angle:
        return next(a for a in self.angles if a.id == angle_id)


def limit_errors(job: ExportJob, limits: ExportSettings) -> list[dict[str, str]]:
    """Configurable bounds, checked once settings are known (the model cannot see them)."""
    errors: list[dict[str, str]] = []

    def add(path: str, message: str) -> None:
        errors.append({"path": path, "code": "limit", "message": message})

    if len(job.angles) > limits.max_angles:
        add("angles", f"{len(job.angles)} angles is over the limit of {limits.max_angles}")
    edits = job.segments if job.segments is not None else job.switches or []
    name = "segments" if job.segments is not None else "switches"
    if len(edits) > limits.max_segments:
        add(name, f"{len(edits)} {name} is over the limit of {limits.max_segments}")
    end = job.segments[-1].end if job.segments else (job.end or 0.0)
    start = job.segments[0].start if job.segments else (job.switches or [Switch(at=0, angle="")])[0].at
    if job.range is not None:
        start, end = job.range.start, job.range.end
    if end - start > limits.max_timeline_seconds:
        add("range" if job.range else name,
            f"{end - start:g} s of timeline is over the limit of {limits.max_timeline_seconds:g} s")
    return errors
