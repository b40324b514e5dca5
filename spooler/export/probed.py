"""What planning knows of each source, as pure data: its probed facts and packet index
(Source), and whether the sources cover what the edit needs of them (Need, coverage).

sources.py (the shell) opens and probes the files and fills these in.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from spooler.errors import ErrorCode, JobError
from spooler.export.models import ExportJob, ExternalAudio, FollowAudio, NoAudio
from spooler.export.timeline import Piece
from spooler.mediainfo import AudioSpan, MediaInfo, MediaLocation, RemoteMedia, VideoIndex

# How far a source's audio may miss a use of it, at either end (documented in
# docs/export.md): AAC audio often ends a frame or two (20-46 ms) before the video. Within
# it the missing tail is padded with silence and the preflight lists it (audioPadding).
AUDIO_TOLERANCE = 0.05
# A shortfall below half a millisecond (a few samples) is rounding, not padding.
PAD_EPSILON = 0.0005


@dataclass(frozen=True)
class Source:
    """A resolved, probed source file."""

    name: str  # as written in the job (relative to a media root), or a remote name as shown
    path: Path  # absolute, symlinks resolved, inside a media root (remote: the shown name)
    info: MediaInfo
    index: VideoIndex | None  # video packets, for sources used as angles
    fd: int | None = None  # the file opened once at validation (see open_source)
    audio: AudioSpan | None = None  # its audio stream's own span, for sources used for audio
    remote: RemoteMedia | None = None  # a remote source: read through the loopback gateway

    @property
    def read_path(self) -> Path:
        """The path a reader of a local source opens: /proc/self/fd/N (the very file that
        was checked, whatever is renamed or swapped later; ffmpeg gets N through pass_fds),
        or `path` for a source that was not opened (pure tests)."""
        return Path(f"/proc/self/fd/{self.fd}") if self.fd is not None else self.path

    @property
    def location(self) -> MediaLocation:
        """What every reader opens (mediainfo.reader_url and reader_protocols turn it into
        ffmpeg's input and its protocol whitelist): the gateway's URL for a remote source,
        else read_path."""
        return self.remote if self.remote is not None else self.read_path

    @property
    def video_end(self) -> float:
        """Source time at which the last video frame stops being shown."""
        return self.index.duration if self.index else self.info.duration


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
    """Every use of a source's audio by the edit as requested: the continuous track (and
    the ambient one under it) over the exported part, or each piece's own audio with
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
    silence every mode pads them with, for the preflight."""
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


def check_needs(needs: list[Need], sources: dict[str, Source], fps: Fraction) -> None:
    """check_coverage against each source's real end, forgiving half an output frame (and
    each use of audio against its audio stream's own span)."""
    ends = {name: (s.video_end if s.index else s.info.duration) for name, s in sources.items()}
    check_coverage(needs, ends, slack=float(1 / fps) / 2, audio=audio_spans(sources))
