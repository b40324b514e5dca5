"""Reading stills back with PyAV: the automatic poster time, and image verification.

The poster is "chosen automatically, not a black frame": at a few candidate times spread
over the output, the keyframe at or before each is decoded (a seek and one frame each,
never the whole file), reduced to a small grey image, and the one whose brightness varies
most wins. A black, faded or flat frame has almost no variance; a picture has plenty.
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
    """For each candidate time, the keyframe at or before it: (its time, its luma variance).

    Only the keyframe is decoded (the first frame after a seek): a candidate need not be
    exact, and the poster command then seeks straight to that keyframe, cheaply.
    """
    scores: list[tuple[float, float]] = []
    with av.open(f"file:{path}", options=OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        for t in times:
            container.seek(int(t / stream.time_base), stream=stream, backward=True)
            frame = next((f for f in container.decode(stream) if f.time is not None), None)
            if frame is not None and frame.time is not None:
                scores.append((round(float(frame.time), 6), luma_variance(frame)))
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
