"""The `output` part of an export job: container, codecs, quality, size, rate, name."""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spooler.export.rules import fail
from spooler.jobkind import SpecModel


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
CRF_RANGE: dict[str, tuple[int, int]] = {
    "h264": (0, 51),
    "hevc": (0, 51),
    "vp9": (0, 63),
    "av1": (0, 63),
}
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
# vp9: libvpx -cpu-used 0..8; av1: SVT-AV1 -preset 0..13 (higher is faster).
NUMERIC_PRESETS: dict[str, range] = {"vp9": range(0, 9), "av1": range(0, 14)}
EXTENSIONS: dict[str, str] = {"mp4": ".mp4", "mov": ".mov", "mkv": ".mkv", "webm": ".webm"}

_FPS_TEXT = re.compile(r"^([1-9][0-9]{0,5})(?:/([1-9][0-9]{0,4}))?$")
# The schema states the text form too, so that a client's validator agrees with the loader
# ("29.97" as a string is refused by both); the loader's own message stays `fps`'s.
FpsText = Annotated[str, WithJsonSchema({"type": "string", "pattern": _FPS_TEXT.pattern})]


def check_quality(codec: str, crf: int | None, preset: str | None) -> None:
    """crf and preset within what `codec`'s encoder accepts (errors at `crf` / `preset`)."""
    if crf is not None:
        low, high = CRF_RANGE[codec]
        if not low <= crf <= high:
            raise fail(("crf",), "crf_range", f"must be between {low} and {high} for {codec}", crf)
    if preset is not None:
        allowed = (
            X26X_PRESETS
            if codec in ("h264", "hevc")
            else tuple(str(n) for n in NUMERIC_PRESETS[codec])
        )
        if preset not in allowed:
            raise fail(
                ("preset",), "preset", f"must be one of {', '.join(allowed)} for {codec}", preset
            )


def parse_fps(value: float | str) -> Fraction:
    """30 -> 30, 29.97 -> 30000/1001, "24000/1001" -> 24000/1001."""
    if isinstance(value, str):
        match = _FPS_TEXT.match(value)
        if not match:
            raise ValueError("must be 'keep', a number or a ratio like '30000/1001'")
        return Fraction(int(match[1]), int(match[2] or 1))
    return nominal_rate(Fraction(value))


def nominal_rate(rate: Fraction) -> Fraction:
    """The nominal rate a measured one stands for: 29.97 -> 30000/1001; 29.87 (a phone's
    variable-rate average) -> the nearest of 30 and 30000/1001; else a small fraction."""
    candidates = [Fraction(round(rate)), Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)]
    near = [c for c in candidates if c and abs(rate / c - 1) <= Fraction(5, 1000)]
    if near:
        return min(near, key=lambda c: abs(rate - c))
    return rate.limit_denominator(1001)


class OutputSpec(SpecModel):
    container: Container = "mp4"
    video_codec: VideoCodec = "h264"
    crf: int | None = Field(
        None, ge=0, le=63, description="Quality; exclusive with videoBitrateKbps."
    )
    preset: str | None = Field(None, max_length=16)
    video_bitrate_kbps: int | None = Field(None, ge=50, le=500_000)
    size: SizeSpec = KeepSize()
    fps: Literal["keep"] | float | FpsText = Field(
        "keep", description="'keep', 30, 29.97, '30000/1001'"
    )
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
            raise fail(
                ("videoCodec",),
                "codec_container",
                f"{codec} cannot be stored in {self.container}",
                codec,
            )
        if self.audio_codec and self.audio_codec not in CONTAINER_AUDIO[self.container]:
            raise fail(
                ("audioCodec",),
                "codec_container",
                f"{self.audio_codec} cannot be stored in {self.container}",
                self.audio_codec,
            )
        if self.crf is not None and self.video_bitrate_kbps is not None:
            raise fail(
                ("crf",), "quality_conflict", "give crf or videoBitrateKbps, not both", self.crf
            )
        if codec == "copy":
            for name, given in (
                ("crf", self.crf),
                ("preset", self.preset),
                ("videoBitrateKbps", self.video_bitrate_kbps),
            ):
                if given is not None:
                    raise fail((name,), "copy_option", "has no meaning with videoCodec copy", given)
            if self.size.mode != "keep":
                raise fail(("size",), "copy_option", "videoCodec copy keeps the source size", None)
            if self.fps != "keep":
                raise fail(
                    ("fps",), "copy_option", "videoCodec copy keeps the source rate", self.fps
                )
            return self
        check_quality(codec, self.crf, self.preset)
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
        return safe_file_name(self.file_name, EXTENSIONS[self.container])


def safe_file_name(name: str, ext: str, default: str = "export") -> str:
    """`name` made safe, ending in `ext` (see OutputSpec.safe_file_name)."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    if stem.lower().endswith(ext):
        stem = stem[: -len(ext)]
    stem = stem.strip("._-")[:100] or default
    return stem + ext
