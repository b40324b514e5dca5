"""The shell side of the extra outputs: temp names, verification, poster and storyboard.

Every output is verified before ANY is published: a job publishes all of its outputs or,
failing, none (the daemon removes the temporary files of a failed attempt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spooler.errors import ErrorCode, JobError
from spooler.export.commands import Plan
from spooler.export.deliverables import exported_span, output_names
from spooler.export.models import ExportJob
from spooler.export.stills import pick_poster_time, verify_image
from spooler.export.thumbnails import plan_thumbnails, poster_seconds
from spooler.kinds.base import JobContext
from spooler.media import MediaInfo, probe, stream_ends
from spooler.status import OutputInfo


@dataclass(frozen=True)
class Ready:
    """A verified temporary file and what the status will say about it."""

    temp: Path
    info: OutputInfo


def temp_paths(job: ExportJob, temp_path: Callable[[str], Path]) -> dict[str, Path]:
    """A temporary path for every published name but the main output's."""
    return {name: temp_path(name) for _, name in output_names(job)[1:]}


def rendition_temps(job: ExportJob, temps: dict[str, Path]) -> tuple[Path, ...]:
    return tuple(temps[name] for path, name in output_names(job) if path[0] == "renditions")


def verify_media(
    path: Path,
    plan: Plan,
    *,
    size: tuple[int, int] | None,
    want_video: bool = True,
    want_audio: bool,
    name: str,
) -> MediaInfo:
    """The file has the planned streams and frame size; its video (or, audio only, its
    audio) lasts the planned duration, and audio ends with video, within the tolerance."""
    try:
        # Decoding one frame gives the display rotation a stream copy keeps (item 9 of
        # issue 11): the status reports the size as shown, whatever the mode.
        info = probe(path, decode=want_video)
    except JobError as exc:
        raise JobError(
            ErrorCode.VERIFY_FAILED, f"{name}: cannot be read back: {exc.message}"
        ) from exc
    ends = stream_ends(path)
    expected = float(plan.duration)
    problems: list[str] = []
    main_end = ends.video_end if want_video else ends.audio_end
    if want_video and ends.video_end is None:
        problems.append("no video stream")
    elif not want_video and ends.video_end is not None:
        problems.append("unexpected video stream")
    if want_audio and ends.audio_end is None:
        problems.append("no audio stream")
    elif not want_audio and ends.audio_end is not None:
        problems.append("unexpected audio stream")
    if main_end is not None and abs(main_end - expected) > plan.tolerance:
        which = "video" if want_video else "audio"
        problems.append(
            f"{which} lasts {main_end:.3f} s, expected {expected:.3f} s ± {plan.tolerance:.3f}"
        )
    if (
        want_video
        and want_audio
        and ends.video_end is not None
        and ends.audio_end is not None
        and abs(ends.audio_end - ends.video_end) > plan.tolerance
    ):
        problems.append(f"audio ends at {ends.audio_end:.3f} s but video at {ends.video_end:.3f} s")
    if size is not None and info.display_size is not None and info.display_size != size:
        shown = info.display_size
        problems.append(f"frame is {shown[0]}x{shown[1]}, expected {size[0]}x{size[1]}")
    if problems:
        raise JobError(
            ErrorCode.VERIFY_FAILED,
            f"{name} failed verification: " + "; ".join(problems),
            {
                "probe": info.summary(),
                "videoEnd": ends.video_end,
                "audioEnd": ends.audio_end,
                "expected": expected,
            },
        )
    return info


def shown_size(info: MediaInfo) -> tuple[int | None, int | None]:
    """Width and height as players show them (a 90° rotation swaps the stored ones)."""
    return info.display_size or (None, None)


def verify_renditions(plan: Plan) -> list[Ready]:
    ready: list[Ready] = []
    for out in plan.extra_outputs:
        size = (out.width, out.height) if out.width and out.height else None
        info = verify_media(
            out.temp,
            plan,
            size=size,
            want_video=size is not None,
            want_audio=out.audio,
            name=out.name,
        )
        ready.append(
            Ready(
                out.temp,
                OutputInfo(
                    path=out.name,
                    role=out.role,
                    size_bytes=out.temp.stat().st_size,
                    duration_seconds=info.duration,
                    width=shown_size(info)[0],
                    height=shown_size(info)[1],
                    mime_type=out.mime_type,
                ),
            )
        )
    return ready


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
