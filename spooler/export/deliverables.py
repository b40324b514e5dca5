"""What an export job delivers besides its main output: renditions, a poster, a storyboard.

Models and their cross-field checks (unique, non-colliding file names; times inside the
exported part), kept out of models.py so the edit model and the deliverables evolve apart;
the names every output is published and written under (pure).
Every published name derives from the main output's safe name, so the job folder never
holds two outputs with names that differ only in case.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spooler.export.output import (
    CONTAINER_AUDIO,
    CONTAINER_VIDEO,
    EXTENSIONS,
    KeepSize,
    SizeSpec,
    check_quality,
    safe_file_name,
)
from spooler.export.rules import TIME_EPSILON, fail
from spooler.jobkind import SpecModel

if TYPE_CHECKING:
    from spooler.export.models import ExportJob

_RENDITION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
MAX_RENDITIONS = 16  # a hard cap; the configured export.max_outputs is usually lower
MAX_STORYBOARD_TILES = 2000
RENDITION_EXTENSIONS = {**EXTENSIONS, "m4a": ".m4a"}
RENDITION_MIME = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "m4a": "audio/mp4",
}
IMAGE_MIME = {"jpeg": "image/jpeg", "webp": "image/webp"}
IMAGE_EXTENSIONS = {"jpeg": ".jpg", "webp": ".webp"}


class Rendition(SpecModel):
    """One more output of the same edit, encoded from the same decoded frames."""

    name: str = Field(pattern=_RENDITION_NAME, description="Unique; names the file by default.")
    audio_only: bool = Field(False, description="Audio only (m4a, AAC): no video stream.")
    container: Literal["mp4", "mov", "mkv", "webm", "m4a"] | None = Field(
        None, description="Default: mp4, or m4a for audioOnly."
    )
    video_codec: Literal["h264", "hevc", "vp9", "av1"] = "h264"
    crf: int | None = Field(None, ge=0, le=63)
    preset: str | None = Field(None, max_length=16)
    video_bitrate_kbps: int | None = Field(None, ge=50, le=500_000)
    size: SizeSpec = Field(KeepSize(), description="Relative to the main output's frame.")
    audio_codec: Literal["aac", "opus"] | None = Field(None, description="Default: per container.")
    audio_bitrate_kbps: int = Field(192, ge=16, le=1024)
    file_name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Default: '<output stem>-<name>', never cut (see docs/export.md).",
    )

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or "\\" in value or "\x00" in value):
            raise PydanticCustomError("file_name", "must be a file name, not a path")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> Rendition:
        container = self.container_value
        if self.audio_only:
            if container != "m4a":
                raise fail(
                    ("container",), "codec_container", "audioOnly is stored in m4a", container
                )
            for field_name, given in (
                ("crf", self.crf),
                ("preset", self.preset),
                ("videoBitrateKbps", self.video_bitrate_kbps),
            ):
                if given is not None:
                    raise fail(
                        (field_name,), "audio_only_option", "has no meaning with audioOnly", given
                    )
            if self.size.mode != "keep":
                raise fail(("size",), "audio_only_option", "has no meaning with audioOnly", None)
            if self.audio_codec not in (None, "aac"):
                raise fail(("audioCodec",), "codec_container", "m4a holds aac", self.audio_codec)
            return self
        if container == "m4a":
            raise fail(("container",), "codec_container", "m4a is for audioOnly", container)
        codec = self.video_codec
        if codec not in CONTAINER_VIDEO[container]:
            raise fail(
                ("videoCodec",),
                "codec_container",
                f"{codec} cannot be stored in {container}",
                codec,
            )
        if self.audio_codec and self.audio_codec not in CONTAINER_AUDIO[container]:
            raise fail(
                ("audioCodec",),
                "codec_container",
                f"{self.audio_codec} cannot be stored in {container}",
                self.audio_codec,
            )
        if self.crf is not None and self.video_bitrate_kbps is not None:
            raise fail(
                ("crf",), "quality_conflict", "give crf or videoBitrateKbps, not both", self.crf
            )
        check_quality(codec, self.crf, self.preset)
        return self

    @property
    def container_value(self) -> str:
        return self.container or ("m4a" if self.audio_only else "mp4")

    @property
    def audio_codec_value(self) -> str:
        return self.audio_codec or ("opus" if self.container_value == "webm" else "aac")

    @property
    def faststart(self) -> bool:
        return True  # every rendition is meant for a browser or a player's progressive download


class PosterSpec(SpecModel):
    at: float | None = Field(
        None, ge=0, description="Timeline seconds; null: chosen automatically (not a black frame)."
    )
    format: Literal["jpeg", "webp"] = "jpeg"
    width: int | None = Field(
        None, ge=16, le=7680, multiple_of=2, description="Default: the main output's width."
    )


class StoryboardSpec(SpecModel):
    """A sprite sheet of tiles every `interval` seconds and a WebVTT file pointing into it."""

    interval: float = Field(5.0, ge=0.5, le=3600, description="Seconds of output per tile.")
    columns: int = Field(10, ge=1, le=20)
    width: int = Field(160, ge=32, le=640, multiple_of=2, description="Tile width in pixels.")


def exported_span(job: ExportJob) -> tuple[float, float]:
    """Timeline [start, end) of what the job exports (its range, else the whole edit)."""
    if job.range is not None:
        return job.range.start, job.range.end
    if job.segments:
        return job.segments[0].start, job.segments[-1].end
    assert job.switches and job.end is not None
    return job.switches[0].at, job.end


def output_names(job: ExportJob) -> list[tuple[tuple[str | int, ...], str]]:
    """Every file the job publishes, with the JSON path that chose its name: main output
    first, then renditions, poster, storyboard sprite and VTT."""
    main = job.output.safe_file_name
    stem = main.rsplit(".", 1)[0]
    names: list[tuple[tuple[str | int, ...], str]] = [(("output", "fileName"), main)]
    for index, rendition in enumerate(job.renditions):
        ext = RENDITION_EXTENSIONS[rendition.container_value]
        if rendition.file_name:
            names.append(
                (("renditions", index, "fileName"), safe_file_name(rendition.file_name, ext))
            )
        else:
            names.append(
                (("renditions", index, "name"), default_rendition_name(stem, rendition, ext))
            )
    if job.poster is not None:
        names.append((("poster",), f"{stem}.poster{IMAGE_EXTENSIONS[job.poster.format]}"))
    if job.storyboard is not None:
        names.append((("storyboard",), f"{stem}.storyboard.jpg"))
        names.append((("storyboard",), f"{stem}.storyboard.vtt"))
    return names


def default_rendition_name(stem: str, rendition: Rendition, ext: str) -> str:
    """`<stem>-<name><ext>`, never cut (at most 100 + 1 + 32 characters + extension, far
    below NAME_MAX): cutting the joined name (issue 11) made a 100-character stem's
    renditions collide with the main output and silently dropped the end of the name.
    Distinct for every valid job: longer than the main output's name by at least
    `-<name>`, and told apart from each other by their names (no '.' in a name; unique,
    ignoring case) and extensions. Both parts are safe already (sanitised stem, pattern)."""
    return f"{stem}-{rendition.name}{ext}"


def check_deliverables(job: ExportJob) -> None:
    """Cross-field rules of renditions, poster and storyboard (raises a located error)."""
    seen: dict[str, str] = {}
    for index, rendition in enumerate(job.renditions):
        # Ignoring case: names become file names, and a job folder never holds two names
        # that differ only in case (case-insensitive volumes, macOS and Windows clients).
        if rendition.name.lower() in seen:
            raise fail(
                ("renditions", index, "name"),
                "duplicate_rendition",
                f"rendition name {rendition.name!r} is used twice (ignoring case)",
                rendition.name,
            )
        seen[rendition.name.lower()] = rendition.name
        if rendition.audio_only and job.audio.mode == "none":
            raise fail(
                ("renditions", index, "audioOnly"),
                "no_audio",
                "an audio-only rendition needs audio (audio.mode is none)",
                True,
            )
    taken: dict[str, str] = {}
    for path, name in output_names(job):
        if name.lower() in taken:
            raise fail(
                path,
                "output_name_collision",
                f"file name {name!r} is already used by {taken[name.lower()]}",
                name,
            )
        taken[name.lower()] = ".".join(str(p) for p in path)
    start, end = exported_span(job)
    at = job.poster.at if job.poster is not None else None
    if at is not None and not start - TIME_EPSILON <= at < end - TIME_EPSILON:
        raise fail(
            ("poster", "at"),
            "poster_outside",
            f"must lie within the exported part {start:g}-{end:g} s",
            at,
        )
    if job.storyboard is not None:
        tiles = storyboard_tiles(end - start, job.storyboard.interval)
        if tiles > MAX_STORYBOARD_TILES:
            raise fail(
                ("storyboard", "interval"),
                "storyboard_tiles",
                f"gives {tiles} tiles for {end - start:g} s, over {MAX_STORYBOARD_TILES}; "
                "use a longer interval",
                job.storyboard.interval,
            )


def storyboard_tiles(duration: float, interval: float) -> int:
    """Tiles at 0, interval, 2*interval, ... before the end (a 1 ms tail makes none)."""
    return max(1, math.ceil((duration - 0.001) / interval))


def output_count(job: ExportJob) -> int:
    return len(output_names(job))


def temp_paths(job: ExportJob, temp_path: Callable[[str], Path]) -> dict[str, Path]:
    """A temporary path for every published name but the main output's."""
    return {name: temp_path(name) for _, name in output_names(job)[1:]}


def rendition_temps(job: ExportJob, temps: dict[str, Path]) -> tuple[Path, ...]:
    return tuple(temps[name] for path, name in output_names(job) if path[0] == "renditions")
