"""Issue 11, export side: rotated copies, audio shorter than video, rendition names.

Real ffmpeg on generated media (mediagen), run through ExportKind with a FakeContext.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from export_support import FakeContext
from hypothesis import given, settings
from hypothesis import strategies as st
from mediagen import Clip, make_clip, read_frames
from pydantic import ValidationError

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import ExportJob, ExportKind
from spooler.export.deliverables import output_names
from spooler.media import scan_audio, stream_ends

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


# --- item 6: audio shorter than its video ---------------------------------------------------


@pytest.fixture(scope="module")
def short_root(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    """4 s of video each: short.mp4 with 3 s of audio, near.mp4 with 3.97 s (30 ms short,
    like AAC that ends a frame early), full.mp4 with all 4 s."""
    root = tmp_path_factory.mktemp("short-audio")
    for link, clip in (
        ("short.mp4", Clip("red", audio_seconds=3.0)),
        ("near.mp4", Clip("green", audio_seconds=3.97)),
        ("full.mp4", Clip("yellow")),
    ):
        (root / link).symlink_to(make_clip(ffmpeg, clip, root).name)
    return root


def _edit(source: str, end: float, **more: Any) -> dict[str, Any]:
    return {
        "angles": [{"id": "cam", "source": source}, {"id": "other", "source": "full.mp4"}],
        "segments": [{"angle": "cam", "start": 0.0, "end": end}],
        "output": {"preset": "ultrafast"},
        **more,
    }


SHORT = "needs the audio of short.mp4 until 3.500 s but its audio stream ends at 3.000 s"


@pytest.mark.parametrize("mode", ["reencode", "copy", "smart", "auto"])
@pytest.mark.parametrize(
    ("audio", "use"),
    [
        ({"mode": "angle"}, "audio"),
        ({"mode": "external", "source": "short.mp4"}, "audio"),  # a camera file as the mic
        ({"mode": "follow"}, "segments[0]"),
        ({"mode": "external", "source": "full.mp4", "ambient": {"angle": "cam"}}, "audio.ambient"),
    ],
)
def test_audio_shorter_than_the_video_is_source_too_short_in_every_mode(
    run_job: Run, short_root: Path, mode: str, audio: dict[str, Any], use: str
) -> None:
    # Given a source whose audio stops at 3 s while its video runs to 4 s, used until 3.5 s
    job = _edit("short.mp4", 3.5, mode=mode, audio=audio)
    if mode == "copy":
        del job["output"]
    # When it is exported, whatever the mode and whichever way its audio is used
    with pytest.raises(JobError) as caught:
        run_job(job, short_root)
    # Then it fails before any ffmpeg runs, naming the use, the file and the audio's end
    # (reencode used to pad 0.5 s of silence silently, auto and smart: verify_failed)
    assert caught.value.code is ErrorCode.SOURCE_TOO_SHORT
    assert caught.value.message == f"{use} {SHORT}"


def test_video_only_use_of_a_short_audio_source_is_fine(run_job: Run, short_root: Path) -> None:
    # The video of short.mp4 under another file's audio: its own audio is not used
    ctx = run_job(
        _edit("short.mp4", 3.5, mode="reencode", audio={"mode": "angle", "angle": "other"}),
        short_root,
    )
    assert ctx.preflight is not None and ctx.preflight["audioPadding"] == []


@pytest.mark.parametrize(("mode", "path"), [("reencode", "reencode"), ("auto", "copy")])
def test_audio_short_within_the_tolerance_is_padded_and_said(
    run_job: Run, short_root: Path, mode: str, path: str
) -> None:
    # Given near.mp4: its audio ends 30 ms before its video (within the 50 ms tolerance)
    job = _edit("near.mp4", 4.0, mode=mode)
    if mode == "auto":
        del job["output"]  # a copy needs the source's codec settings
    # When the whole of it is exported
    ctx = run_job(job, short_root)
    # Then the preflight says what is padded, and the output's audio lasts as its video
    assert ctx.preflight is not None and ctx.preflight["path"] == path
    (padded,) = ctx.preflight["audioPadding"]
    assert padded["use"] == "audio" and padded["source"] == "near.mp4"
    assert padded["seconds"] == pytest.approx(0.03, abs=0.002)
    if path == "copy":  # a copy of the short track would end early: it is encoded, padded
        assert ctx.preflight["output"]["audio"] == "encoded"
    ends = stream_ends(ctx.job_dir / ctx.published[0].path)
    assert ends.video_end == pytest.approx(4.0, abs=1 / 30)
    assert ends.audio_end is not None and abs(ends.audio_end - ends.video_end) < 0.005


@pytest.mark.parametrize("container", ["mp4", "mkv", "wav"])
@pytest.mark.parametrize("audio_seconds", [1.5, 13.97])  # the end far from / near the tail
def test_scan_audio_finds_the_audio_streams_own_end(
    tmp_path: Path, ffmpeg: str, container: str, audio_seconds: float
) -> None:
    # Given 14 s of video (none in a wav) with a shorter audio track
    out = tmp_path / f"a.{container}"
    video = [] if container == "wav" else ["-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=14"]
    codec = ["-c:a", "pcm_s16le"] if container == "wav" else ["-c:v", "libx264", "-c:a", "aac"]
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", *video, "-f", "lavfi", "-i", f"sine=d={audio_seconds}",
         *codec, str(out)],
        check=True,
    )  # fmt: skip
    # Then the tail read (or the whole-stream fallback) finds where the audio really ends
    span = scan_audio(out)
    assert span is not None
    assert span.start == pytest.approx(0.0, abs=0.001)
    assert span.end == pytest.approx(audio_seconds, abs=0.001)
    if container != "wav":
        assert span.end == pytest.approx(stream_ends(out).audio_end, abs=0.001)
