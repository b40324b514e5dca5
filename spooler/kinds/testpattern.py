"""`testpattern`: render a generated test card with a tone. No input files at all.

It exercises the whole spool cycle with a real ffmpeg process, which makes it the job of
choice for smoke tests, `spooler doctor`-style checks, benchmarks of the spool itself and
cancel drills (`realtime: true` runs it at playback speed).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from spooler.config import Settings
from spooler.export.encoders import encoder_threads
from spooler.jobkind import JobContext, JobSpec, Step
from spooler.media import verify_media
from spooler.status import OutputInfo


class TestPatternJob(JobSpec):
    __test__ = False  # not a pytest class

    kind: Literal["testpattern"]
    # At least 0.1 s: a frame and some audio at any fps (1e-300 made ffmpeg fail, three
    # times, as ffmpeg_failed); also keeps the number out of exponent notation for ffmpeg.
    duration_seconds: float = Field(2.0, ge=0.1, le=86_400)
    width: int = Field(320, ge=16, le=3840, multiple_of=2)
    height: int = Field(240, ge=16, le=2160, multiple_of=2)
    fps: int = Field(25, ge=1, le=120)
    realtime: bool = Field(False, description="Render at playback speed (for cancel drills).")
    file_name: str = Field("testpattern.mp4", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.mp4$")


class TestPatternKind:
    name: ClassVar[str] = "testpattern"
    spec_model: ClassVar[type[JobSpec]] = TestPatternJob

    def limit_errors(self, spec: TestPatternJob, settings: Settings) -> list[dict[str, Any]]:
        limit = settings.limits.max_testpattern_seconds
        if spec.duration_seconds <= limit:
            return []
        message = f"{spec.duration_seconds:g} s is over the limit of {limit:g} s"
        return [{"path": "durationSeconds", "code": "limit", "message": message}]

    def run(self, spec: TestPatternJob, ctx: JobContext) -> None:
        ctx.declare_steps([Step("render", 1.0)])
        ctx.declare_outputs([spec.file_name])
        tmp = ctx.temp_path(spec.file_name)
        pace = ["-re"] if spec.realtime else []
        video = f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}"
        tone = "sine=frequency=440:sample_rate=48000"
        length = f"duration={spec.duration_seconds}"
        args = [
            *pace, "-f", "lavfi", "-i", f"{video}:{length}",
            *pace, "-f", "lavfi", "-i", f"{tone}:{length}",
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            *encoder_threads(ctx.settings.ffmpeg_threads),
            "-c:a", "aac", "-b:a", "96k",
            "-movflags", "+faststart", "-f", "mp4",
            str(tmp),
        ]  # fmt: skip
        ctx.run_ffmpeg(args, step="render", expected_seconds=spec.duration_seconds)
        ctx.encoded()
        probe = verify_media(
            tmp,
            expected_seconds=spec.duration_seconds,
            tolerance=1.0 / spec.fps + 0.05,
            want_audio=True,
            size=(spec.width, spec.height),
            name=spec.file_name,
        )
        ctx.publish(
            tmp,
            spec.file_name,
            OutputInfo(
                path=spec.file_name,
                size_bytes=tmp.stat().st_size,
                duration_seconds=probe.duration,
                width=probe.width,
                height=probe.height,
                mime_type="video/mp4",
            ),
        )
