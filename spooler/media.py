"""Probing media with PyAV (libavformat in-process; the ffmpeg wheel ships no ffprobe)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from spooler.errors import ErrorCode, JobError

# Only plain files: never let a name like "concat:a|b" or "http://..." reach a protocol.
_OPEN_OPTIONS = {"protocol_whitelist": "file"}


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    format_name: str
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: Fraction | None = None
    time_base: Fraction | None = None
    pix_fmt: str | None = None
    rotation: int = 0
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def summary(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 6),
            "format": self.format_name,
            "videoCodec": self.video_codec,
            "width": self.width,
            "height": self.height,
            "fps": float(self.fps) if self.fps else None,
            "timeBase": str(self.time_base) if self.time_base else None,
            "pixFmt": self.pix_fmt,
            "rotation": self.rotation,
            "audioCodec": self.audio_codec,
            "sampleRate": self.sample_rate,
            "channels": self.channels,
        }


def probe(path: Path) -> MediaInfo:
    """Read container and stream facts; raise JobError(source_unreadable) if it cannot."""
    try:
        with av.open(f"file:{path}", options=_OPEN_OPTIONS) as container:
            return _describe(container)
    except FileNotFoundError as exc:
        raise JobError(ErrorCode.SOURCE_MISSING, f"{path.name} does not exist") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise JobError(
            ErrorCode.SOURCE_UNREADABLE, f"{path.name} cannot be read as media: {exc}"
        ) from exc


def _describe(container: Any) -> MediaInfo:
    duration = float(container.duration / av.time_base) if container.duration else 0.0
    fields: dict[str, Any] = {"duration": duration, "format_name": container.format.name}
    if container.streams.video:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        fields.update(
            video_codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=Fraction(rate) if rate else None,
            time_base=Fraction(stream.time_base) if stream.time_base else None,
            pix_fmt=ctx.format.name if ctx.format else None,
        )
        if stream.duration and stream.time_base and not duration:
            fields["duration"] = float(stream.duration * stream.time_base)
    if container.streams.audio:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        fields.update(
            audio_codec=ctx.name,
            sample_rate=ctx.sample_rate,
            channels=ctx.channels if hasattr(ctx, "channels") else ctx.layout.nb_channels,
        )
    return MediaInfo(**fields)


def verify_output(
    path: Path, *, expected_seconds: float, tolerance: float, want_audio: bool, want_video: bool = True
) -> MediaInfo:
    """Probe a finished temporary output before it is published."""
    try:
        info = probe(path)
    except JobError as exc:
        raise JobError(ErrorCode.VERIFY_FAILED, f"output cannot be read back: {exc.message}") from exc
    problems: list[str] = []
    if want_video and not info.has_video:
        problems.append("no video stream")
    if want_audio and not info.has_audio:
        problems.append("no audio stream")
    if abs(info.duration - expected_seconds) > tolerance:
        problems.append(
            f"duration {info.duration:.3f} s, expected {expected_seconds:.3f} s ± {tolerance:.3f}"
        )
    if problems:
        raise JobError(
            ErrorCode.VERIFY_FAILED,
            "output failed verification: " + "; ".join(problems),
            {"probe": info.summary()},
        )
    return info
