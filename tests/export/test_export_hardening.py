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
from hypothesis import given, settings
from hypothesis import strategies as st
from mediagen import read_frames
from pydantic import ValidationError

from spooler.config import Settings
from spooler.export import ExportJob, ExportKind
from spooler.export.deliverables import output_names

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


# --- item 10: default rendition names never collide and are never cut ---------------------

ONE_ANGLE: dict[str, Any] = {
    "angles": [{"id": "cam1", "source": "red.mp4"}],
    "segments": [{"angle": "cam1", "start": 0.0, "end": 1.0}],
}


def names(job: dict[str, Any]) -> list[str]:
    return [name for _, name in output_names(ExportJob.model_validate({**ONE_ANGLE, **job}))]


def test_a_100_character_file_name_keeps_its_renditions_apart() -> None:
    # Given the documented maximum: a 100-character output.fileName
    stem = "a" * 94 + "-small"
    # When renditions take their default names, one of them named like the stem's tail
    got = names(
        {
            "output": {"fileName": stem},
            "renditions": [{"name": "small"}, {"name": "small-"}, {"name": "x" * 32}],
        }
    )
    # Then every name is whole and distinct (they used to be cut to 100 characters: the
    # first collided with the main output, and "small-" lost its dash and collided too)
    assert got == [
        f"{stem}.mp4",
        f"{stem}-small.mp4",
        f"{stem}-small-.mp4",
        f"{stem}-{'x' * 32}.mp4",
    ]


def test_rendition_names_are_unique_ignoring_case() -> None:
    with pytest.raises(ValidationError) as caught:
        ExportJob.model_validate(
            {**ONE_ANGLE, "renditions": [{"name": "Small"}, {"name": "small", "container": "mkv"}]}
        )
    (error,) = caught.value.errors()
    assert (error["loc"], error["type"]) == (("renditions", 1, "name"), "duplicate_rendition")


_NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")


@settings(max_examples=300, deadline=None)
@given(
    file_name=st.text(min_size=1, max_size=200).filter(
        lambda t: not any(c in t for c in "/\\\x00")
    ),
    container=st.sampled_from(["mp4", "mov", "mkv", "webm"]),
    renditions=st.lists(
        st.tuples(_NAME, st.sampled_from([None, "mp4", "mov", "mkv", "webm", "m4a"])),
        max_size=16,
        unique_by=lambda r: r[0].lower(),
    ),
    poster=st.booleans(),
    storyboard=st.booleans(),
)
def test_every_valid_job_without_explicit_rendition_names_gets_distinct_names(
    file_name: str,
    container: str,
    renditions: list[tuple[str, str | None]],
    poster: bool,
    storyboard: bool,
) -> None:
    codec = "vp9" if container == "webm" else "h264"
    job: dict[str, Any] = {
        "output": {"fileName": file_name, "container": container, "videoCodec": codec},
        "renditions": [
            {
                "name": name,
                "container": kind,
                "audioOnly": kind == "m4a",
                "videoCodec": "vp9" if kind == "webm" else "h264",
            }
            for name, kind in renditions
        ],
    }
    if poster:
        job["poster"] = {}
    if storyboard:
        job["storyboard"] = {}
    got = names(job)  # validation (output_name_collision included) passes
    assert len({n.lower() for n in got}) == len(got)
    assert all(len(n.encode()) <= 255 and not n.startswith((".", "-")) for n in got)
    main_stem = got[0].rsplit(".", 1)[0]
    for (name, _), published in zip(renditions, got[1 : 1 + len(renditions)], strict=True):
        assert published.startswith(f"{main_stem}-{name}.")  # whole, never cut


def test_renditions_of_a_100_character_name_are_published(run_job: Run) -> None:
    # Given a 100-character fileName and a rendition named like its tail
    stem = "b" * 94 + "-small"
    job = {
        **ONE_ANGLE,
        "mode": "reencode",
        "output": {"preset": "ultrafast", "fileName": stem},
        "renditions": [{"name": "small", "size": {"mode": "height", "height": 60}}],
    }
    # When it runs, then both outputs are published under their whole names
    ctx = run_job(job)
    assert [o.path for o in ctx.published] == [f"{stem}.mp4", f"{stem}-small.mp4"]
    assert sorted(p.name for p in ctx.job_dir.iterdir()) == [f"{stem}-small.mp4", f"{stem}.mp4"]
