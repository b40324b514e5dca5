"""Fixtures for the ingest tests: generated media, and the kinds run for real."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The export tests' media generator and test context, shared rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "export"))

from export_support import FakeContext

from spooler.config import Settings
from spooler.ffmpeg import find_ffmpeg
from spooler.kinds import KINDS


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg(None)


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    media, derived = tmp_path / "media", tmp_path / "derived"
    media.mkdir()
    derived.mkdir()
    return media, derived


@pytest.fixture
def run_kind(tmp_path: Path, roots: tuple[Path, Path], ffmpeg: str) -> Callable[..., FakeContext]:
    """Run a job dict through its kind for real (ffmpeg, files); returns the context."""
    counter = iter(range(1000))
    media, derived = roots

    def run(job: dict[str, Any], **ingest: Any) -> FakeContext:
        job_dir = tmp_path / f"job{next(counter)}"
        job_dir.mkdir()
        settings = Settings(
            media_roots=[media],
            spool_dir=tmp_path / "spool",
            ingest={"derived_root": derived, **ingest},
        )
        ctx = FakeContext(job_dir, settings, ffmpeg, job_id=job_dir.name)
        kind = KINDS[job["kind"]]
        spec = kind.spec_model.model_validate(job)
        assert kind.limit_errors(spec, settings) == []
        kind.run(spec, ctx)
        return ctx

    return run
