"""The poster and the storyboard, the shell side: their ffmpeg command run (planned by
thumbnails.py), the automatic poster time and image verification, read back with PyAV.

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
from spooler.export.deliverables import exported_span
from spooler.export.models import ExportJob
from spooler.export.thumbnails import plan_thumbnails, poster_seconds
from spooler.export.verify import Ready
from spooler.jobkind import JobContext
from spooler.mediainfo import OPEN_OPTIONS, PROTOCOLS, MediaInfo
from spooler.status import OutputInfo

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


def make_thumbnails(
    job: ExportJob,
    ctx: JobContext,
    main: Path,
    info: MediaInfo,
    temps: dict[str, Path],
    fds: tuple[int, ...],
) -> list[Ready]:
    """Poster and storyboard from the verified main output (one ffmpeg command)."""
    if job.poster is None and job.storyboard is None:
        return []
    shown = info.display_size
    if shown is None:
        raise JobError(ErrorCode.VERIFY_FAILED, "the output has no video for a poster")
    at = poster_seconds(job, exported_span(job)[0])
    if job.poster is not None and at is None:
        at = pick_poster_time(main, info.duration)
        ctx.log_line(f"# poster: automatic choice at {at:.3f} s of the output")
    if at is not None:
        # -ss drops frames that start before it: aim at the start of the last frame at most.
        frame = 1 / float(info.fps) if info.fps else 0.1
        at = max(0.0, min(at, info.duration - frame))
    plan = plan_thumbnails(job, main, shown[0], shown[1], info.duration, at, temps)
    assert plan is not None
    ctx.check_cancelled()
    ctx.run_ffmpeg(
        plan.command.args,
        step=plan.command.step,
        expected_seconds=plan.command.expected_seconds,
        pass_fds=fds,
    )
    ready: list[Ready] = []
    for image in plan.images:
        size = verify_image(image.temp, image.format, image.width, image.height)
        ready.append(
            Ready(
                image.temp,
                OutputInfo(
                    path=image.name,
                    role=image.role,
                    size_bytes=size,
                    width=image.width,
                    height=image.height,
                    mime_type=image.mime_type,
                ),
            )
        )
    if plan.vtt_name is not None and plan.vtt_text is not None:
        vtt = temps[plan.vtt_name]
        vtt.write_text(plan.vtt_text, encoding="utf-8")
        ready.append(
            Ready(
                vtt,
                OutputInfo(
                    path=plan.vtt_name,
                    role="storyboard",
                    size_bytes=vtt.stat().st_size,
                    duration_seconds=info.duration,
                    mime_type="text/vtt",
                ),
            )
        )
    return ready
