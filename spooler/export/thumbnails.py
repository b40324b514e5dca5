"""The poster and the storyboard: one small ffmpeg command over the finished main output.

Made from the verified main output rather than inside the encode so that they work the
same for every mode (a copy has no filter graph): the poster input seeks straight to its
frame (one GOP decoded); the storyboard reads the output once and keeps one frame per
interval. Pure: stills.py picks the automatic poster time beforehand and runs the command.

Storyboard: one sprite JPEG of `columns` x rows tiles, and a WebVTT file whose cue k
covers output time [k*interval, (k+1)*interval) and points at tile k with a media
fragment, `export.storyboard.jpg#xywh=x,y,w,h` (what video.js, Plyr and JW Player read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from spooler.errors import ErrorCode, JobError
from spooler.export.commands import Command, input_args, rate_text
from spooler.export.deliverables import (
    IMAGE_MIME,
    StoryboardSpec,
    output_names,
    storyboard_tiles,
)
from spooler.export.models import ExportJob

MAX_SPRITE_SIDE = 16_384  # JPEG allows 65535; browsers and memory prefer less
JPEG_QUALITY = "3"  # mjpeg -q:v, 2 (best) .. 31


@dataclass(frozen=True)
class PlannedImage:
    name: str
    temp: Path
    role: str  # "poster" or "storyboard"
    mime_type: str
    format: str  # "jpeg" or "webp"
    width: int
    height: int


@dataclass(frozen=True)
class Tile:
    start: float  # output seconds
    end: float
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class ThumbnailPlan:
    command: Command
    images: list[PlannedImage]
    tiles: list[Tile]
    vtt_name: str | None
    vtt_text: str | None


def _even(value: Fraction) -> int:
    return max(2, 2 * math.floor(value / 2 + Fraction(1, 2)))


def storyboard_tiles_of(
    spec: StoryboardSpec, duration: float, width: int, height: int
) -> tuple[list[Tile], int, int]:
    """The tiles (row by row) and the sprite's size, for an output of width x height."""
    tile_w = spec.width
    tile_h = _even(Fraction(tile_w * height, width))
    count = storyboard_tiles(duration, spec.interval)
    columns = min(spec.columns, count)
    rows = math.ceil(count / columns)
    tiles = [
        Tile(
            start=k * spec.interval,
            end=min((k + 1) * spec.interval, duration),
            x=(k % columns) * tile_w,
            y=(k // columns) * tile_h,
            w=tile_w,
            h=tile_h,
        )
        for k in range(count)
    ]
    return tiles, columns * tile_w, rows * tile_h


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def vtt_text(tiles: list[Tile], sprite: str) -> str:
    """WebVTT cues pointing into the sprite (same folder: a relative URL)."""
    lines = ["WEBVTT", ""]
    for tile in tiles:
        lines += [
            f"{_timestamp(tile.start)} --> {_timestamp(tile.end)}",
            f"{sprite}#xywh={tile.x},{tile.y},{tile.w},{tile.h}",
            "",
        ]
    return "\n".join(lines)


def plan_thumbnails(
    job: ExportJob,
    main: Path,
    width: int,
    height: int,
    duration: float,
    poster_at: float | None,
    temp_for: dict[str, Path],
) -> ThumbnailPlan | None:
    """One ffmpeg command for the poster (at `poster_at`, output seconds) and the sprite.

    `main` is the verified main output; `temp_for` maps each published name to its
    temporary path. None when the job asks for neither.
    """
    if job.poster is None and job.storyboard is None:
        return None
    names = {path[0]: name for path, name in output_names(job) if path[0] != "renditions"}
    inputs: list[str] = []
    chains: list[str] = []
    outputs: list[str] = []
    images: list[PlannedImage] = []
    tiles: list[Tile] = []
    vtt_name = vtt = None
    count = 0  # inputs so far
    if job.storyboard is not None:
        spec = job.storyboard
        tiles, sprite_w, sprite_h = storyboard_tiles_of(spec, duration, width, height)
        if max(sprite_w, sprite_h) > MAX_SPRITE_SIDE:
            raise JobError(
                ErrorCode.INVALID_JOB,
                f"storyboard: the sprite would be {sprite_w}x{sprite_h} px, over "
                f"{MAX_SPRITE_SIDE}; use a longer interval, more columns or a smaller width",
            )
        sprite = next(n for p, n in output_names(job) if p[0] == "storyboard")
        vtt_name = sprite.removesuffix(".jpg") + ".vtt"
        vtt = vtt_text(tiles, sprite)
        k = count
        count += 1
        inputs += input_args(main)
        columns = sprite_w // tiles[0].w
        rows = sprite_h // tiles[0].h
        rate = 1 / Fraction(spec.interval).limit_denominator(1000)
        chains.append(
            f"[{k}:v:0]fps=fps={rate_text(rate)}:start_time=0:round=near,"
            f"trim=end_frame={len(tiles)},scale={tiles[0].w}:{tiles[0].h},setsar=1,"
            f"tile=layout={columns}x{rows}[sprite]"
        )
        outputs += _image_output("[sprite]", "jpeg", temp_for[sprite])
        images.append(
            PlannedImage(
                sprite, temp_for[sprite], "storyboard", "image/jpeg", "jpeg", sprite_w, sprite_h
            )
        )
    if job.poster is not None:
        at = max(0.0, min(poster_at or 0.0, duration - 0.001))
        k = count
        count += 1
        inputs += input_args(main, start=Fraction(at))
        poster_w = job.poster.width or width
        poster_h = _even(Fraction(poster_w * height, width))
        chains.append(f"[{k}:v:0]trim=end_frame=1,scale={poster_w}:{poster_h},setsar=1[poster]")
        name = names["poster"]
        outputs += _image_output("[poster]", job.poster.format, temp_for[name])
        images.insert(  # published in the order of output_names: poster first
            0,
            PlannedImage(
                name,
                temp_for[name],
                "poster",
                IMAGE_MIME[job.poster.format],
                job.poster.format,
                poster_w,
                poster_h,
            ),
        )
    args = [*inputs, "-filter_complex", ";".join(chains), *outputs]
    # Seconds of output read: the storyboard decodes it all, the poster about a GOP.
    seconds = duration if job.storyboard is not None else min(duration, 10.0)
    return ThumbnailPlan(Command("thumbnails", args, seconds / 4), images, tiles, vtt_name, vtt)


def _image_output(label: str, image_format: str, path: Path) -> list[str]:
    if image_format == "webp":
        codec = ["-c:v", "libwebp", "-quality", "80"]
    else:
        codec = ["-c:v", "mjpeg", "-q:v", JPEG_QUALITY]
    # Single-image muxers (never image2, whose names are patterns).
    muxer = "webp" if image_format == "webp" else "mjpeg"
    return [
        "-map",
        label,
        "-frames:v",
        "1",
        *codec,
        "-map_metadata",
        "-1",
        "-f",
        muxer,
        f"file:{path}",
    ]


def poster_seconds(job: ExportJob, start: float) -> float | None:
    """The requested poster time in output seconds (timeline time - exported start)."""
    if job.poster is None or job.poster.at is None:
        return None
    return job.poster.at - start
