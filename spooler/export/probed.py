"""What planning knows of each source, as pure data: its probed facts and packet index
(Source), and whether the sources cover what the edit needs of them (Need, coverage).

sources.py (the shell) opens and probes the files and fills these in.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from spooler.errors import ErrorCode, JobError
from spooler.mediainfo import MediaInfo, VideoIndex


@dataclass(frozen=True)
class Source:
    """A resolved, probed source file."""

    name: str  # as written in the job (relative to a media root)
    path: Path  # absolute, symlinks resolved, inside a media root
    info: MediaInfo
    index: VideoIndex | None  # video packets, for sources used as angles
    fd: int | None = None  # the file opened once at validation (see open_source)

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


def check_needs(needs: list[Need], sources: dict[str, Source], fps: Fraction) -> None:
    """check_coverage against each source's real end, forgiving half an output frame."""
    ends = {name: (s.video_end if s.index else s.info.duration) for name, s in sources.items()}
    check_coverage(needs, ends, slack=float(1 / fps) / 2)
