"""Sources: confine each path to the media roots, probe it, and check it covers its use.

Resolution and probing touch the disk (thin shell); `coverage_problems` is pure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from spooler.errors import ErrorCode, JobError
from spooler.export.models import ExportJob, ExternalAudio, FollowAudio, NoAudio
from spooler.export.rules import check_source_syntax
from spooler.export.timeline import Piece
from spooler.export.watermark import probe_image
from spooler.media import AudioSpan, MediaInfo, VideoIndex, probe, scan_audio, scan_video

# How far a source's audio may miss a use of it, at either end (documented in
# docs/export.md): AAC audio often ends a frame or two (20-46 ms) before the video. Within
# it the missing tail is padded with silence and the preflight lists it (audioPadding).
AUDIO_TOLERANCE = 0.05
# A shortfall below half a millisecond (a few samples) is rounding, not padding.
PAD_EPSILON = 0.0005


@dataclass(frozen=True)
class Source:
    """A resolved, probed source file."""

    name: str  # as written in the job (relative to a media root)
    path: Path  # absolute, symlinks resolved, inside a media root
    info: MediaInfo
    index: VideoIndex | None  # video packets, for sources used as angles
    fd: int | None = None  # the file opened once at validation (see open_source)
    audio: AudioSpan | None = None  # its audio stream's own span, for sources used for audio

    @property
    def read_path(self) -> Path:
        """The path every reader opens: /proc/self/fd/N (the very file that was checked,
        whatever is renamed or swapped later; ffmpeg gets N through pass_fds), or `path`
        for a source that was not opened (pure tests)."""
        return Path(f"/proc/self/fd/{self.fd}") if self.fd is not None else self.path

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
        if any(ord(c) < 32 or ord(c) == 127 for c in str(candidate)):
            # A link inside the root to a name with a newline would break an ffconcat line.
            raise JobError(
                ErrorCode.SOURCE_NOT_ALLOWED,
                f"{name!r} resolves to a path with control characters",
                {"source": name},
            )
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


def _not_allowed(name: str, why: str) -> JobError:
    return JobError(ErrorCode.SOURCE_NOT_ALLOWED, f"{name!r} {why}", {"source": name})


def open_source(name: str, roots: list[Path]) -> tuple[Path, int]:
    """Resolve `name`, then open that file once: (its real path, a read-only descriptor).

    Closes the race between the check and the use: the final component is opened with
    O_NOFOLLOW (a symlink swapped in after resolution fails with ELOOP), the descriptor
    must be a regular file, and /proc/self/fd/N (the path the kernel has for the opened
    file, whatever a swapped parent directory did) must still lie inside a media root.
    Every later reader opens /proc/self/fd/N, i.e. this very file.
    """
    path = resolve_source(name, roots)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise JobError(
            ErrorCode.SOURCE_MISSING, f"{name!r} disappeared while opening", {"source": name}
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_allowed(name, "was replaced by a symlink while opening") from exc
        raise JobError(
            ErrorCode.SOURCE_UNREADABLE,
            f"{name!r} cannot be opened: {exc.strerror}",
            {"source": name},
        ) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_allowed(name, "is not a regular file")
        real = Path(f"/proc/self/fd/{fd}").readlink()
        if not any(real.is_relative_to(root.resolve()) for root in roots):
            raise _not_allowed(name, "was moved outside the media roots while opening")
    except BaseException:
        os.close(fd)
        raise
    return real, fd


def close_sources(sources: dict[str, Source]) -> None:
    for source in sources.values():
        if source.fd is not None:
            with contextlib.suppress(OSError):
                os.close(source.fd)


def audio_sources(job: ExportJob) -> set[str]:
    """Sources whose audio the job needs (an angle used for video may lack audio)."""
    if isinstance(job.audio, ExternalAudio):
        ambient = job.audio.ambient
        return {job.audio.source} | ({job.angle(ambient.angle).source} if ambient else set())
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
    try:
        for name in sorted(needed_video | needed_audio):
            out[name] = _inspect(job, name, roots, name in needed_video, name in needed_audio)
        if job.watermark is not None and job.watermark.image is not None:
            out[job.watermark.image] = _inspect_image(job.watermark.image, roots)
    except BaseException:
        close_sources(out)
        raise
    return out


def _inspect(job: ExportJob, name: str, roots: list[Path], video: bool, audio: bool) -> Source:
    """Open, probe and (for angles) index one source; its descriptor is closed on failure."""
    path, fd = open_source(name, roots)
    try:
        read = Path(f"/proc/self/fd/{fd}")
        info = probe(read, decode=video, name=name)
        if video and not info.has_video:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{name!r} has no video stream", {"source": name}
            )
        if audio and not info.has_audio:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA,
                f"{name!r} has no audio stream",
                {"source": name, "audio": job.audio.mode},
            )
        index = scan_video(read, name=name) if video else None
        span = scan_audio(read, name=name) if audio else None
        if index is not None and not index.packets:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{name!r} has no video packets", {"source": name}
            )
    except BaseException:
        os.close(fd)
        raise
    return Source(name, path, info, index, fd, span)


def _inspect_image(name: str, roots: list[Path]) -> Source:
    """The watermark: opened like any source, then checked as a PNG (watermark.py)."""
    path, fd = open_source(name, roots)
    try:
        info = probe_image(fd, name)
    except BaseException:
        os.close(fd)
        raise
    return Source(name, path, info, None, fd)


@dataclass(frozen=True)
class Need:
    """A use of a source over timeline [start, end), which maps to [start+offset, end+offset)."""

    label: str  # "segments[7]", "audio"
    angle: str  # angle id, or "audio"
    source: str
    offset: Fraction
    start: Fraction
    end: Fraction
    audio: bool = False  # a use of the source's audio stream (else of its video)


def coverage_problems(
    needs: list[Need],
    ends: dict[str, float],
    slack: float,
    audio: dict[str, AudioSpan] | None = None,
) -> list[str]:
    """Human-readable reasons why sources do not cover their uses (pure).

    `ends` maps a source to where it stops; `slack` forgives rounding at the last frame.
    A use of audio is checked against `audio`, the audio stream's own span, within
    AUDIO_TOLERANCE (a source without a known span: against `ends`, as video).
    """
    problems: list[str] = []
    for need in needs:
        first = float(need.start + need.offset)
        last = float(need.end + need.offset)
        file = need.source.rsplit("/", 1)[-1]
        span = (audio or {}).get(need.source) if need.audio else None
        if span is not None:
            problems += _audio_problem(need, span, first, last, file)
        elif first < -slack:
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


def _audio_problem(need: Need, span: AudioSpan, first: float, last: float, file: str) -> list[str]:
    if first < span.start - AUDIO_TOLERANCE:
        hint = " (check its sync offset)" if first < 0 else ""
        return [
            f"{need.label} needs the audio of {file} from {first:.3f} s but its audio stream "
            f"starts at {span.start:.3f} s{hint}"
        ]
    if last > span.end + AUDIO_TOLERANCE:
        return [
            f"{need.label} needs the audio of {file} until {last:.3f} s but its audio stream "
            f"ends at {span.end:.3f} s"
        ]
    return []


def audio_needs(job: ExportJob, pieces: list[Piece]) -> list[Need]:
    """Every use of a source's audio by the edit as requested (pure): the continuous track
    (and the ambient one under it) over the exported part, or each piece's own audio with
    `follow`. Checked once before any mode is chosen, so every mode says the same."""
    if isinstance(job.audio, NoAudio) or not pieces:
        return []
    start, end = pieces[0].start, pieces[-1].end
    if isinstance(job.audio, FollowAudio):
        return [
            Need(
                p.label,
                p.angle,
                job.angle(p.angle).source,
                Fraction(job.angle(p.angle).sync_offset),
                p.start,
                p.end,
                audio=True,
            )
            for p in pieces
        ]
    if isinstance(job.audio, ExternalAudio):
        ext = job.audio
        needs = [Need("audio", "audio", ext.source, Fraction(ext.offset), start, end, True)]
        if ext.ambient is not None:
            under = job.angle(ext.ambient.angle)
            offset = Fraction(under.sync_offset)
            needs.append(Need("audio.ambient", under.id, under.source, offset, start, end, True))
        return needs
    angle = job.angle(job.audio_angle or job.angles[0].id)
    return [Need("audio", angle.id, angle.source, Fraction(angle.sync_offset), start, end, True)]


def audio_padding(needs: list[Need], audio: dict[str, AudioSpan]) -> list[dict[str, object]]:
    """The uses of audio that end after their audio stream, within AUDIO_TOLERANCE: the
    silence every mode pads them with, for the preflight (pure)."""
    out: list[dict[str, object]] = []
    for need in needs:
        span = audio.get(need.source) if need.audio else None
        short = float(need.end + need.offset) - span.end if span is not None else 0.0
        if PAD_EPSILON < short <= AUDIO_TOLERANCE:
            out.append({"use": need.label, "source": need.source, "seconds": round(short, 6)})
    return out


def audio_spans(sources: dict[str, Source]) -> dict[str, AudioSpan]:
    return {name: s.audio for name, s in sources.items() if s.audio is not None}


def check_coverage(
    needs: list[Need],
    ends: dict[str, float],
    slack: float,
    audio: dict[str, AudioSpan] | None = None,
) -> None:
    problems = coverage_problems(needs, ends, slack, audio)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise JobError(ErrorCode.SOURCE_TOO_SHORT, problems[0] + more, {"problems": problems[:50]})
