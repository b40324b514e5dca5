"""Renditions, poster and storyboard with real ffmpeg on generated media, and their
validation errors."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import pytest
from export_support import FakeContext, decode_errors
from mediagen import colour_of, number_of, read_frames
from pydantic import ValidationError

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import ExportJob, ExportKind
from spooler.export.models import limit_errors
from spooler.export.stills import choose, luma_variance
from spooler.media import stream_ends

Job = Callable[..., FakeContext]
FRAME = 1 / 30
ANGLES = [{"id": "cam1", "source": "red.mp4"}, {"id": "cam2", "source": "green.mp4"}]
CUTS = [
    {"angle": "cam1", "start": 0.0, "end": 1.5},
    {"angle": "cam2", "start": 1.5, "end": 3.0},
]
SMALL = {"name": "small", "size": {"mode": "height", "height": 60}, "preset": "ultrafast"}


def with_renditions(*renditions: dict[str, Any]) -> dict[str, Any]:
    """The two-angle edit, re-encoded fast, with these renditions."""
    return {
        "angles": ANGLES,
        "segments": CUTS,
        "mode": "reencode",
        "output": {"preset": "ultrafast"},
        "renditions": list(renditions),
    }


@pytest.fixture
def run_job(tmp_path: Path, media_root: Path, ffmpeg: str) -> Job:
    """Run a job dict through ExportKind for real; the context lists what it published."""
    counter = iter(range(1000))

    def run(job: dict[str, Any]) -> FakeContext:
        job_dir = tmp_path / f"job{next(counter)}"
        job_dir.mkdir()
        settings = Settings(media_roots=[media_root], spool_dir=tmp_path / "spool")
        ctx = FakeContext(job_dir, settings, ffmpeg)
        ExportKind().run(ExportJob.model_validate(job), ctx)
        assert sorted(p.name for p in job_dir.iterdir()) == sorted(ctx.planned_outputs)
        assert [o.path for o in ctx.published] == ctx.planned_outputs
        return ctx

    return run


def test_renditions_are_encoded_in_one_pass(run_job: Job) -> None:
    # Given a two-angle edit with a smaller h264, a cropped square vp9 and an audio-only m4a
    job = with_renditions(
        SMALL,
        {
            "name": "square",
            "container": "webm",
            "videoCodec": "vp9",
            "preset": "8",
            "size": {"mode": "exact", "width": 64, "height": 64, "fit": "crop"},
        },
        {"name": "audio", "audioOnly": True, "audioBitrateKbps": 96},
    )
    # When it runs
    ctx = run_job(job)
    # Then ONE ffmpeg command wrote all four files, each listed with its facts
    assert len(ctx.commands) == 1
    assert ctx.commands[0].count("-map") == 2 + 2 + 2 + 1
    main, small, square, audio = ctx.published
    assert (main.path, small.path, square.path, audio.path) == (
        "export.mp4",
        "export-small.mp4",
        "export-square.webm",
        "export-audio.m4a",
    )
    assert [o.role for o in ctx.published] == ["main", "rendition", "rendition", "rendition"]
    assert (small.width, small.height, small.mime_type) == (80, 60, "video/mp4")
    assert (square.width, square.height, square.mime_type) == (64, 64, "video/webm")
    assert (audio.width, audio.height, audio.mime_type) == (None, None, "audio/mp4")
    for out, codecs in (
        (small, ("h264", "aac")),
        (square, ("vp9", "opus")),
        (audio, (None, "aac")),
    ):
        path = ctx.job_dir / out.path
        assert out.size_bytes == path.stat().st_size > 0
        assert out.duration_seconds == pytest.approx(3.0, abs=FRAME + 0.03)
        with av.open(str(path)) as container:
            video = container.streams.video
            assert (video[0].codec_context.codec.canonical_name if video else None) == codecs[0]
            assert container.streams.audio[0].codec_context.codec.canonical_name == codecs[1]
        ends = stream_ends(path)
        assert ends.audio_end == pytest.approx(3.0, abs=FRAME)
        if codecs[0]:
            assert ends.video_end == pytest.approx(3.0, abs=FRAME)
        assert decode_errors(ctx.ffmpeg, path) == ""
    # And each video rendition shows the same frames as the main output, cut where it is
    expected = [(c, n) for c, n, _ in read_frames(ctx.job_dir / main.path)]
    assert [(c, n) for c, n, _ in read_frames(ctx.job_dir / small.path)] == expected
    assert ctx.preflight is not None and len(ctx.preflight["renditions"]) == 3


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def test_mp4_renditions_share_one_sound_encode_even_under_an_odd_folder_name(
    tmp_path: Path, media_root: Path, ffmpeg: str
) -> None:
    # Given MP4-family renditions asking for the main output's sound, in a job folder whose
    # name holds every character the tee muxer's slave list treats as special
    job_dir = tmp_path / "o'dd |[job] dir: \\ x"
    job_dir.mkdir()
    job = with_renditions(SMALL, {"name": "audio", "audioOnly": True})
    ctx = FakeContext(job_dir, Settings(media_roots=[media_root], spool_dir=tmp_path / "s"), ffmpeg)
    # When it runs
    ExportKind().run(ExportJob.model_validate(job), ctx)
    # Then one command with one audio encoder wrote the three files, in the job folder
    assert len(ctx.commands) == 1 and ctx.commands[0].count("-c:a") == 1
    assert ctx.commands[0][-3:-1] == ["-f", "tee"]
    assert sorted(p.name for p in job_dir.iterdir()) == sorted(ctx.planned_outputs)
    main, small, audio = (job_dir / o.path for o in ctx.published)
    # ... each whole and clean, the sound the very same packets in all three
    for path, video in ((main, True), (small, True), (audio, False)):
        ends = stream_ends(path)
        assert ends.audio_end == pytest.approx(3.0, abs=FRAME)
        assert (ends.video_end is not None) == video
        assert decode_errors(ctx.ffmpeg, path) == ""
    assert _audio_packets(main) == _audio_packets(small) == _audio_packets(audio) != []
    # ... and the rendition shows the same frames as the main output, cut where it is
    expected = [(c, n) for c, n, _ in read_frames(main)]
    assert [(c, n) for c, n, _ in read_frames(small)] == expected
    with av.open(str(small)) as container:
        assert container.streams.video[0].codec_context.height == 60


def _sprite_and_cues(job_dir: Path, vtt_name: str) -> tuple[tuple[int, int], list[Any]]:
    text = (job_dir / vtt_name).read_text()
    assert text.startswith("WEBVTT\n")
    cues = re.findall(
        r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n"
        r"([^#\n]+)#xywh=(\d+),(\d+),(\d+),(\d+)",
        text,
    )
    (sprite_name,) = {c[8] for c in cues}
    with av.open(str(job_dir / sprite_name)) as container:
        frame = next(container.decode(video=0))
    return (frame.width, frame.height), cues


def test_poster_and_storyboard(run_job: Job) -> None:
    # Given a poster at 2.2 s of the timeline (0.2 s into cam2) and a storyboard each 0.5 s
    job = {
        "angles": ANGLES,
        "segments": CUTS,
        "range": {"start": 1.0, "end": 3.0},
        "mode": "reencode",
        "audio": {"mode": "none"},
        "output": {"preset": "ultrafast", "fileName": "cut"},
        "poster": {"at": 2.2, "width": 80},
        "storyboard": {"interval": 0.5, "columns": 3, "width": 40},
    }
    ctx = run_job(job)
    names = [o.path for o in ctx.published]
    assert names == ["cut.mp4", "cut.poster.jpg", "cut.storyboard.jpg", "cut.storyboard.vtt"]
    poster, sprite, vtt = ctx.published[1:]
    # Then the poster has the requested size and shows cam2 (green), not black
    with av.open(str(ctx.job_dir / poster.path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (80, 60) == (poster.width, poster.height)
        assert luma_variance(frame) > 100
        shown = frame.reformat(format="yuv420p")
        assert (colour_of(shown), number_of(shown)) == ("green", 66)  # cam2's frame at 2.2 s
    assert poster.mime_type == "image/jpeg" and sprite.mime_type == "image/jpeg"
    assert vtt.mime_type == "text/vtt"
    # And the VTT's cues cover the output without gaps, each tile inside the sprite
    (width, height), cues = _sprite_and_cues(ctx.job_dir, vtt.path)
    assert (width, height) == (sprite.width, sprite.height) == (120, 60)
    times = [
        (
            int(c[0]) * 3600 + int(c[1]) * 60 + int(c[2]) + int(c[3]) / 1000,
            int(c[4]) * 3600 + int(c[5]) * 60 + int(c[6]) + int(c[7]) / 1000,
        )
        for c in cues
    ]
    assert len(times) == 4 and times[0][0] == 0 and times[-1][1] == pytest.approx(2.0)
    assert all(a[1] == b[0] for a, b in pairwise(times))
    for cue in cues:
        x, y, w, h = (int(v) for v in cue[9:])
        assert (w, h) == (40, 30) and x + w <= width and y + h <= height


def _black_then_picture(ffmpeg: str, folder: Path) -> None:
    """3 s of black, then 2 s of testsrc2: the automatic poster must find the picture."""
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "color=black:s=160x120:r=30:d=3",
         "-f", "lavfi", "-i", "testsrc2=s=160x120:r=30:d=2", "-filter_complex",
         "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-c:v", "libx264", "-preset",
         "ultrafast", "-g", "30", str(folder / "dark.mp4")],
        check=True,
    )  # fmt: skip


def test_automatic_poster_is_not_black(run_job: Job, media_root: Path, ffmpeg: str) -> None:
    if not (media_root / "dark.mp4").exists():
        _black_then_picture(ffmpeg, media_root)
    job = {
        "angles": [{"id": "dark", "source": "dark.mp4"}],
        "segments": [{"angle": "dark", "start": 0, "end": 5}],
        "audio": {"mode": "none"},
        "mode": "copy",  # the poster is made from the finished output in every mode
        "poster": {"format": "webp"},
    }
    ctx = run_job(job)
    assert ctx.preflight is not None and ctx.preflight["path"] == "copy"
    poster = ctx.published[1]
    assert (poster.path, poster.mime_type) == ("export.poster.webp", "image/webp")
    with av.open(str(ctx.job_dir / poster.path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (160, 120)
        assert luma_variance(frame) > 100


def test_poster_on_the_last_frame(run_job: Job) -> None:
    job = {
        "angles": ANGLES,
        "segments": CUTS,
        "audio": {"mode": "none"},
        "output": {"preset": "ultrafast"},
        "poster": {"at": 2.999},
    }
    ctx = run_job(job)
    with av.open(str(ctx.job_dir / ctx.published[1].path)) as container:
        shown = next(container.decode(video=0)).reformat(format="yuv420p")
        assert (colour_of(shown), number_of(shown)) == ("green", 89)  # the last frame


def test_a_rendition_failing_verification_publishes_nothing(
    run_job: Job, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import spooler.export.kind as kind_module

    real = kind_module.plan_export

    def lying_plan(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        wrong = dataclasses.replace(plan.extra_outputs[0], width=100)
        return dataclasses.replace(plan, extra_outputs=[wrong, *plan.extra_outputs[1:]])

    monkeypatch.setattr(kind_module, "plan_export", lying_plan)
    job = {
        "angles": ANGLES[:1],
        "segments": CUTS[:1],
        "mode": "reencode",
        "output": {"preset": "ultrafast"},
        "renditions": [{"name": "small", "size": {"mode": "height", "height": 60}}],
        "poster": {},
    }
    with pytest.raises(JobError) as caught:
        run_job(job)
    assert caught.value.code is ErrorCode.VERIFY_FAILED
    assert "export-small.mp4" in caught.value.message
    assert "frame is 80x60, expected 100x60" in caught.value.message
    # Not even the main output, which passed: only temporary files, for the daemon to remove
    assert [p.name for p in (tmp_path / "job0").iterdir() if not p.name.startswith(".tmp-")] == []


def test_choose_prefers_the_liveliest_and_the_earliest_of_equals() -> None:
    assert choose([(1.0, 0.0), (2.0, 50.0), (3.0, 10.0)]) == 2.0
    assert choose([(1.0, 5.0), (2.0, 5.0)]) == 1.0


BASE: dict[str, Any] = {"angles": ANGLES, "segments": CUTS}


@pytest.mark.parametrize(
    ("changes", "loc", "code"),
    [
        (
            {"renditions": [{"name": "a"}, {"name": "a"}]},
            ("renditions", 1, "name"),
            "duplicate_rendition",
        ),
        (
            {"renditions": [{"name": "a", "fileName": "Export.MP4"}]},
            ("renditions", 0, "fileName"),
            "output_name_collision",
        ),
        (
            {"renditions": [{"name": "b"}, {"name": "c", "fileName": "export-b"}]},
            ("renditions", 1, "fileName"),
            "output_name_collision",
        ),
        (
            {"renditions": [{"name": "a", "fileName": "x/y"}]},
            ("renditions", 0, "fileName"),
            "file_name",
        ),
        ({"renditions": [{"name": "-a"}]}, ("renditions", 0, "name"), "string_pattern_mismatch"),
        ({"renditions": [{"name": "a"}], "mode": "copy"}, ("renditions",), "copy_option"),
        (
            {"renditions": [{"name": "a", "audioOnly": True}], "audio": {"mode": "none"}},
            ("renditions", 0, "audioOnly"),
            "no_audio",
        ),
        (
            {"renditions": [{"name": "a", "audioOnly": True, "crf": 20}]},
            ("renditions", 0, "crf"),
            "audio_only_option",
        ),
        (
            {"renditions": [{"name": "a", "audioOnly": True, "container": "mp4"}]},
            ("renditions", 0, "container"),
            "codec_container",
        ),
        (
            {"renditions": [{"name": "a", "container": "m4a"}]},
            ("renditions", 0, "container"),
            "codec_container",
        ),
        (
            {"renditions": [{"name": "a", "container": "webm"}]},
            ("renditions", 0, "videoCodec"),
            "codec_container",
        ),
        ({"renditions": [{"name": "a", "crf": 60}]}, ("renditions", 0, "crf"), "crf_range"),
        (
            {"renditions": [{"name": "a", "size": {"mode": "height", "height": 61}}]},
            ("renditions", 0, "size", "height", "height"),
            "multiple_of",
        ),
        ({"renditions": [{"name": f"r{i}"} for i in range(17)]}, ("renditions",), "too_long"),
        ({"poster": {"at": 3.0}}, ("poster", "at"), "poster_outside"),
        ({"poster": {"format": "png"}}, ("poster", "format"), "literal_error"),
        ({"poster": {"width": 81}}, ("poster", "width"), "multiple_of"),
        ({"storyboard": {"interval": 0.1}}, ("storyboard", "interval"), "greater_than_equal"),
        (
            {
                "storyboard": {"interval": 0.5},
                "segments": [{"angle": "cam1", "start": 0, "end": 1001}],
            },
            ("storyboard", "interval"),
            "storyboard_tiles",
        ),
        ({"storyboard": {"columns": 0}}, ("storyboard", "columns"), "greater_than_equal"),
    ],
)
def test_bad_deliverables_give_precise_errors(
    changes: dict[str, Any], loc: tuple[Any, ...], code: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        ExportJob.model_validate({**BASE, **changes})
    (error,) = caught.value.errors()
    assert (error["loc"], error["type"]) == (loc, code)


def test_output_count_is_limited_by_settings(tmp_path: Path) -> None:
    job = ExportJob.model_validate(
        {**BASE, "renditions": [{"name": "a"}, {"name": "b"}], "poster": {}, "storyboard": {}}
    )
    settings = Settings(spool_dir=tmp_path, export={"max_outputs": 5})
    assert limit_errors(job, settings.export) == [
        {"path": "renditions", "code": "limit", "message": "6 outputs is over the limit of 5"}
    ]
