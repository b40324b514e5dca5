"""The watermark: a PNG from a media root laid over the finished picture, in the same pass.

The image is a source like an angle: resolved inside the media roots, opened once
(sources.open_source: O_NOFOLLOW, /proc/self/fd/N) and read through that descriptor. It is
read by ONE demuxer, `png_pipe` (forced with -f, and the only entry of its input's
-format_whitelist): a stream of PNG images in that one file. Not `image2`, which expands
patterns and opens other files, nor the media allow-list (an image is never an angle).
Before ffmpeg runs, the file must start with the PNG signature, be at most 16 MiB and
4096x4096, and its first image must decode (sources.probe_image: this module is pure).

Placement (pure, in output pixels): width = scale x output width, height from the image's
aspect; margin = margin x output width from the chosen edges (both axes); every number is
rounded to an even pixel, so the box lines up with 4:2:0 chroma and nothing outside it
changes. Opacity multiplies the image's own alpha. `start`/`end` are timeline seconds,
rounded to output frames like cuts; outside them the picture is untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from spooler.export.models import ExportJob, Watermark
from spooler.export.timeline import frame_index
from spooler.mediainfo import MediaLocation, reader_protocols, reader_url

IMAGE_DEMUXER = "png_pipe"


def image_input(path: MediaLocation) -> list[str]:
    """Input arguments for the watermark: the PNG demuxer only, the file protocol only (a
    remote image: http,tcp to the loopback gateway only)."""
    return [
        "-f",
        IMAGE_DEMUXER,
        "-protocol_whitelist",
        reader_protocols(path),
        "-format_whitelist",
        IMAGE_DEMUXER,
        "-i",
        reader_url(path),
    ]


@dataclass(frozen=True)
class Placement:
    """Where the watermark goes: a box in output pixels, and output frames [first, stop)."""

    x: int
    y: int
    width: int
    height: int
    first: int
    stop: int


def even_pixels(value: Fraction | float) -> int:
    return 2 * math.floor(Fraction(value) / 2 + Fraction(1, 2))


def place(
    mark: Watermark,
    image: tuple[int, int],
    size: tuple[int, int],
    output_frames: tuple[int, int],
    timeline: tuple[float, float],
    fps: Fraction,
) -> Placement | None:
    """The box and frames of the watermark (None: its time range misses the output)."""
    width, height = size
    box_w = min(max(2, even_pixels(Fraction(mark.scale) * width)), width)
    box_h = max(2, even_pixels(Fraction(box_w * image[1], image[0])))
    if box_h > height:  # a tall image on a wide frame: fit the height instead
        box_h = height
        box_w = min(max(2, even_pixels(Fraction(box_h * image[0], image[1]))), width)
    margin = even_pixels(Fraction(mark.margin) * width)
    horizontal, vertical = {
        "top-left": ("left", "top"),
        "top-right": ("right", "top"),
        "bottom-left": ("left", "bottom"),
        "bottom-right": ("right", "bottom"),
        "center": ("center", "center"),
    }[mark.position]
    x = {
        "left": margin,
        "right": width - box_w - margin,
        "center": even_pixels((width - box_w) / 2),
    }
    y = {
        "top": margin,
        "bottom": height - box_h - margin,
        "center": even_pixels((height - box_h) / 2),
    }
    left = min(max(0, x[horizontal]), width - box_w)
    top = min(max(0, y[vertical]), height - box_h)
    shown = mark_frames(mark, output_frames, timeline, fps)
    if shown is None:
        return None
    return Placement(left, top, box_w, box_h, *shown)


def mark_frames(
    mark: Watermark,
    output_frames: tuple[int, int],
    timeline: tuple[float, float],
    fps: Fraction,
) -> tuple[int, int] | None:
    """Output frames [first, stop) of the watermark's time range (None: it misses them)."""
    start = Fraction(mark.start) if mark.start is not None else Fraction(timeline[0])
    end = Fraction(mark.end) if mark.end is not None else Fraction(timeline[1])
    origin, total = output_frames
    first = max(frame_index(start, fps) - origin, 0)
    stop = min(frame_index(end, fps) - origin, total)
    if stop <= first:
        return None
    return first, stop


def enable_option(first: int, stop: int, total: int) -> str:
    """The timeline option limiting a filter to output frames [first, stop), if needed."""
    if (first, stop) == (0, total):
        return ""
    return f":enable='between(n,{first},{stop - 1})'"


def overlay_chains(
    spot: Placement, opacity: float, image: int, base: str, out: str, total: int
) -> list[str]:
    """The image (input `image`) prepared and laid over `base` (output frames from 0)."""
    prepare = [
        "trim=end_frame=1",  # one picture, held (a file with several PNGs shows the first)
        "format=rgba",
        f"scale={spot.width}:{spot.height}:flags=lanczos",
    ]
    if opacity < 1:
        prepare.append(f"colorchannelmixer=aa={opacity:.6f}")
    enable = enable_option(spot.first, spot.stop, total)
    return [
        f"[{image}:v:0]{','.join(prepare)}[wm]",
        f"{base}[wm]overlay=x={spot.x}:y={spot.y}:format=yuv420:eof_action=repeat{enable}{out}",
    ]


def timeline_of(job: ExportJob) -> tuple[float, float]:
    _, segments = job.edit_segments()
    return segments[0].start, segments[-1].end
