"""Issue 11, export side: rotated copies, audio shorter than video, rendition names.

Real ffmpeg on generated media (mediagen), run through ExportKind with a FakeContext.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from export_support import FakeContext
from mediagen import read_frames

from spooler.config import Settings
from spooler.export import ExportJob, ExportKind

Run = Callable[..., FakeContext]


@pytest.fixture
def run_job(tmp_path: Path, media_root: Path, ffmpeg: str) -> Run:
    counter = iter(range(1000))

    def run(job: dict[str, Any], root: Path | None = None) -> FakeContext:
        job_dir = tmp_path / f"job{next(counter)}"
        job_dir.mkdir()
        settings = Settings(media_roots=[root or media_root], spool_dir=tmp_path / "spool")
        ctx = FakeContext(job_dir, settings, ffmpeg)
        ExportKind().run(ExportJob.model_validate(job), ctx)
        return ctx

    return run


# --- item 9: a stream copy of a rotated source reports the size as shown ------------------


def test_copy_of_a_rotated_source_reports_the_displayed_size(run_job: Run) -> None:
    # Given the phone angle: stored 240x160 with a 90° display rotation (shown 160x240)
    job = {
        "angles": [{"id": "phone", "source": "blue.mp4"}],
        "segments": [{"angle": "phone", "start": 0.0, "end": 2.0}],
        "poster": {"at": 1.0},
    }
    # When it is exported by stream copy and by re-encoding
    copied = run_job({**job, "mode": "copy"})
    encoded = run_job({**job, "mode": "reencode", "output": {"preset": "ultrafast"}})
    # Then the copy really is a copy (stored size and rotation kept) ...
    assert copied.preflight is not None and copied.preflight["path"] == "copy"
    main = copied.published[0]
    with av.open(str(copied.job_dir / main.path)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.width, ctx.height) == (240, 160)
    assert read_frames(copied.job_dir / main.path)  # decodes
    # ... and both report the displayed size, as reencode always did
    assert (main.width, main.height) == (160, 240)
    assert (encoded.published[0].width, encoded.published[0].height) == (160, 240)
    # And the poster of the copy is portrait too (it was squeezed into 240x160)
    poster = next(o for o in copied.published if o.role == "poster")
    assert (poster.width, poster.height) == (160, 240)
    with av.open(str(copied.job_dir / poster.path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (160, 240)
