"""Helpers for the export tests: a real JobContext for tests, and a decode check.

(A module of its own, not conftest.py: test modules import these by name, and a name like
`conftest` is ambiguous once the suite has more than one.)
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.ffmpeg import FfmpegResult, Limits, run_ffmpeg
from spooler.jobkind import Step
from spooler.s3.remotes import RemoteSources
from spooler.status import OutputInfo


@dataclass
class FakeContext:
    """A test JobContext that runs ffmpeg for real and records what a kind reports."""

    job_dir: Path
    settings: Settings
    ffmpeg: str
    job_id: str = "test-job"
    steps: list[Step] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    preflight: dict[str, Any] | None = None
    published: list[OutputInfo] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)
    reported: list[tuple[str, float]] = field(default_factory=list)  # in-process steps
    log: io.StringIO = field(default_factory=io.StringIO)
    remote_sources: RemoteSources = field(default_factory=RemoteSources)
    encoded_after: int | None = None  # ffmpeg commands run when the kind said encoded()

    def declare_outputs(self, names: list[str]) -> None:
        self.planned_outputs = names

    def declare_steps(self, steps: list[Step]) -> None:
        self.steps = steps

    def run_ffmpeg(
        self,
        args: list[str],
        *,
        step: str,
        expected_seconds: float,
        pass_fds: tuple[int, ...] = (),
    ) -> FfmpegResult:
        assert self.encoded_after is None, "run_ffmpeg after encoded()"
        self.commands.append(args)
        limits = Limits(deadline=None, stall_seconds=60, kill_grace_seconds=3, nice=0)
        return run_ffmpeg(
            self.ffmpeg,
            args,
            expected_seconds=expected_seconds,
            limits=limits,
            log=self.log,
            on_progress=lambda f, s: self.progress.append(f),
            cancelled=lambda: False,
            pass_fds=pass_fds,
        )

    def temp_path(self, name: str) -> Path:
        return self.job_dir / f".tmp-{name}"

    def encoded(self) -> None:
        self.encoded_after = len(self.commands)  # no ffmpeg may follow

    def publish(self, temp: Path, name: str, info: OutputInfo) -> None:
        temp.rename(self.job_dir / name)
        self.published.append(info)

    def warn(self, code: str, message: str, **details: Any) -> None:
        self.warnings.append({"code": code, "message": message, **details})

    def set_preflight(self, report: dict[str, Any]) -> None:
        self.preflight = json.loads(json.dumps(report))  # must be JSON-able

    def log_line(self, text: str) -> None:
        self.log.write(text + "\n")

    def report_progress(self, step: str, fraction: float) -> None:
        self.reported.append((step, fraction))

    def check_cancelled(self) -> None:
        pass


def decode_errors(ffmpeg: str, path: Path) -> str:
    """What `ffmpeg -v error -i OUT -f null -` prints (nothing for a clean file)."""
    done = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (done.stdout + done.stderr).strip()
