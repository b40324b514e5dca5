"""Reading stills back with PyAV: the automatic poster time, and image verification.

The poster is "chosen automatically, not a black frame": a few candidate times spread over
the output are decoded (a seek and about one GOP each, never the whole file), each is
reduced to a small grey image, and the one whose brightness varies most wins. A black,
faded or flat frame has almost no variance; a picture has plenty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from spooler.errors import ErrorCode, JobError
from spooler.media import OPEN_OPTIONS, PROTOCOLS

CANDIDATES = (0.2, 0.35, 0.5, 0.65, 0.8)  # fractions of the output's duration
SAMPLE_SIZE = 48  # candidates are compared as SAMPLE_SIZE x SAMPLE_SIZE grey images
IMAGE_DEMUXERS = {"jpeg": "jpeg_pipe", "webp": "webp_pipe"}


def candidate_times(duration: float) -> list[float]:
    return [round(duration * f, 6) for f in CANDIDATES]


def choose(scores: list[tuple[float, float]]) -> float:
    """The time with the largest luma variance; the earliest of equals (pure)."""
    best = max(scores, key=lambda item: (item[1], -item[0]))
    return best[0]


def luma_variance(frame: Any) -> float:
    grey = frame.reformat(width=SAMPLE_SIZE, height=SAMPLE_SIZE, format="gray")
    plane = grey.planes[0]
    data = bytes(plane)
    values = [
        data[row * plane.line_size + col]
        for row in range(SAMPLE_SIZE)
        for col in range(SAMPLE_SIZE)
    ]
    mean = sum(values) / len(values)
    return float(sum((v - mean) ** 2 for v in values) / len(values))


def score_times(path: Path, times: list[float]) -> list[tuple[float, float]]:
    """Each time with the luma variance of the frame shown then (seek + decode a GOP)."""
    scores: list[tuple[float, float]] = []
    with av.open(f"file:{path}", options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        assert stream.time_base is not None
        for t in times:
            container.seek(int(t / stream.time_base), stream=stream, backward=True)
            chosen = None
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                chosen = frame
                if frame.time >= t - 1e-3:
                    break
            if chosen is not None:
                scores.append((t, luma_variance(chosen)))
    return scores


def pick_poster_time(path: Path, duration: float) -> float:
    """Output seconds of the automatic poster: the liveliest of a few candidates."""
    try:
        scores = score_times(path, candidate_times(duration))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise JobError(ErrorCode.VERIFY_FAILED, f"{path.name}: cannot be read back: {exc}") from exc
    return choose(scores) if scores else 0.0


def verify_image(path: Path, image_format: str, width: int, height: int) -> int:
    """The image decodes and has the planned size; returns its size in bytes."""
    try:
        with av.open(
            # Our own file, read with the image's own demuxer only.
            f"file:{path}",
            format=IMAGE_DEMUXERS[image_format],
            options={"protocol_whitelist": PROTOCOLS},
        ) as container:
            frame = next(container.decode(video=0))
            size = (frame.width, frame.height)
    except (av.FFmpegError, StopIteration, OSError) as exc:
        raise JobError(ErrorCode.VERIFY_FAILED, f"{path.name}: cannot be read back: {exc}") from exc
    if size != (width, height):
        raise JobError(
            ErrorCode.VERIFY_FAILED,
            f"{path.name}: is {size[0]}x{size[1]}, expected {width}x{height}",
        )
    return path.stat().st_size
