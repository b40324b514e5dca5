"""Fixtures for export tests: generated media (once per session) and `run_export`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from export_support import FakeContext
from mediagen import Clip, make_clip

from spooler.config import Settings
from spooler.export import ExportJob, ExportKind
from spooler.ffmpeg import find_ffmpeg

# The angles every real-ffmpeg test draws from: 4 s, 160x120 at 30 fps, GOP 2 s, 3 B-frames.
RED = Clip("red")
GREEN = Clip("green")
YELLOW = Clip("yellow")
# Differs in size, frame rate, rotation, audio layout and rate.
BLUE = Clip("blue", width=240, height=160, fps=25, rotation=90, mono=True, sample_rate=44100)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg(None)


@pytest.fixture(scope="session")
def media_root(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    root = tmp_path_factory.mktemp("media")
    for clip in (RED, GREEN, YELLOW, BLUE):
        path = make_clip(ffmpeg, clip, root)
        (root / f"{clip.colour}.mp4").symlink_to(path.name)
    return root


@pytest.fixture
def run_export(
    tmp_path: Path, media_root: Path, ffmpeg: str
) -> Callable[..., tuple[FakeContext, Path]]:
    """Run an export job dict through ExportKind for real; returns (context, output)."""
    counter = iter(range(1000))

    def run(job: dict[str, Any], **overrides: Any) -> tuple[FakeContext, Path]:
        job_dir = tmp_path / f"job{next(counter)}"
        job_dir.mkdir()
        settings = Settings(media_roots=[media_root], spool_dir=tmp_path / "spool", **overrides)
        ctx = FakeContext(job_dir, settings, ffmpeg)
        spec = ExportJob.model_validate(job)
        ExportKind().run(spec, ctx)
        assert len(ctx.published) == 1
        return ctx, job_dir / ctx.published[0].path

    return run
