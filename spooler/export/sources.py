"""Sources: confine each path to the media roots, probe it, and check it covers its use.

Resolution and probing touch the disk (thin shell); `coverage_problems` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from spooler.errors import ErrorCode, JobError
from spooler.export.models import ExportJob, ExternalAudio, FollowAudio
from spooler.export.rules import check_source_syntax
from spooler.media import MediaInfo, VideoIndex, probe, scan_video


@dataclass(frozen=True)
class Source:
    """A resolved, probed source file."""

    name: str  # as written in the job (relative to a media root)
    path: Path  # absolute, symlinks resolved, inside a media root
    info: MediaInfo
    index: VideoIndex | None  # video packets, for sources used as angles

    @property
    def video_end(self) -> float:
        """Source time at which the last video frame stops being shown."""
        return self.index.duration if self.index else self.info.duration


def resolve_source(name: str, roots: list[Path]) -> Path:
    """The real path of `name` under the first media root that has it.

    Symlinks are resolved before the containment check, so a link pointing out of the
    roots is refused rather than followed.
    """
    problem = check_source_syntax(name)
    if problem:
        raise JobError(ErrorCode.SOURCE_NOT_ALLOWED, f"{name!r}: {problem}", {"source": name})
    outside = False
    for root in roots:
        real_root = root.resolve()
        candidate = (real_root / name).resolve()
        if not candidate.is_relative_to(real_root):
            outside = outside or candidate.exists()
            continue
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise JobError(
                ErrorCode.SOURCE_NOT_ALLOWED, f"{name!r} is not a regular file", {"source": name}
            )
    if outside:
        raise JobError(
            ErrorCode.SOURCE_NOT_ALLOWED,
            f"{name!r} resolves outside the media roots",
            {"source": name},
        )
    raise JobError(
        ErrorCode.SOURCE_MISSING, f"{name!r} was not found in any media root", {"source": name}
    )


def audio_sources(job: ExportJob) -> set[str]:
    """Sources whose audio the job needs (an angle used for video may lack audio)."""
    if isinstance(job.audio, ExternalAudio):
        return {job.audio.source}
    if isinstance(job.audio, FollowAudio):
        return {a.source for a in job.angles}
    angle = job.audio_angle
    return {job.angle(angle).source} if angle else set()


def inspect_sources(job: ExportJob, roots: list[Path], used_angles: set[str]) -> dict[str, Source]:
    """Resolve and probe every source the job uses, keyed by its name in the job."""
    needed_video = {job.angle(a).source for a in used_angles}
    needed_audio = audio_sources(job)
    if isinstance(job.audio, FollowAudio):
        needed_audio = needed_video
    out: dict[str, Source] = {}
    for name in sorted(needed_video | needed_audio):
        path = resolve_source(name, roots)
        info = probe(path, decode=name in needed_video)
        if name in needed_video and not info.has_video:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{name!r} has no video stream", {"source": name}
            )
        if name in needed_audio and not info.has_audio:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA,
                f"{name!r} has no audio stream",
                {"source": name, "audio": job.audio.mode},
            )
        index = scan_video(path) if name in needed_video else None
        if index is not None and not index.packets:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{name!r} has no video packets", {"source": name}
            )
        out[name] = Source(name, path, info, index)
    return out


@dataclass(frozen=True)
class Need:
    """A use of a source over timeline [start, end), which maps to [start+offset, end+offset)."""

    label: str  # "segments[7]", "audio"
    angle: str  # angle id, or "audio"
    source: str
    offset: Fraction
    start: Fraction
    end: Fraction


def coverage_problems(needs: list[Need], ends: dict[str, float], slack: float) -> list[str]:
    """Human-readable reasons why sources do not cover their uses (pure).

    `ends` maps a source to where it stops; `slack` forgives rounding at the last frame.
    """
    problems: list[str] = []
    for need in needs:
        first = float(need.start + need.offset)
        last = float(need.end + need.offset)
        file = need.source.rsplit("/", 1)[-1]
        if first < -slack:
            problems.append(
                f"{need.label} needs {need.angle} at {first:.3f} s but {file} "
                f"starts at 0.000 s (check its sync offset)"
            )
        elif last > ends[need.source] + slack:
            problems.append(
                f"{need.label} needs {need.angle} until {last:.3f} s but {file} "
                f"ends at {ends[need.source]:.3f} s"
            )
    return problems


def check_coverage(needs: list[Need], ends: dict[str, float], slack: float) -> None:
    problems = coverage_problems(needs, ends, slack)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise JobError(ErrorCode.SOURCE_TOO_SHORT, problems[0] + more, {"problems": problems[:50]})
