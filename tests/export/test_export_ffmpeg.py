"""Real ffmpeg on generated media: every frame says its angle and source frame number,
every angle's audio has a tone burst at each whole second of its source time."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from export_support import FakeContext, decode_errors
from mediagen import audio_onsets, colour_of, make_burst_wav, read_frames

from spooler.errors import ErrorCode, JobError
from spooler.export import graph
from spooler.media import stream_ends

Run = Callable[..., tuple[FakeContext, Path]]
FPS = 30
FRAME = 1 / FPS

ANGLES = [
    {"id": "cam1", "source": "red.mp4"},
    {"id": "cam2", "source": "green.mp4", "syncOffset": 0.5},
    {"id": "cam3", "source": "yellow.mp4", "syncOffset": -0.2},
    {"id": "phone", "source": "blue.mp4", "syncOffset": 0.3},
]
COLOUR = {"cam1": "red", "cam2": "green", "cam3": "yellow", "phone": "blue"}
OFFSET = {a["id"]: float(a.get("syncOffset", 0.0)) for a in ANGLES}  # type: ignore[arg-type]
FAST = {"preset": "ultrafast"}


def expected_frames(segments: list[tuple[str, float, float]]) -> list[tuple[str, int]]:
    """(colour, source frame) each output frame must show: cuts at the nearest frame."""
    out: list[tuple[str, int]] = []
    first = math.floor(segments[0][1] * FPS + 0.5)
    for angle, start, end in segments:
        for n in range(math.floor(start * FPS + 0.5), math.floor(end * FPS + 0.5)):
            out.append((COLOUR[angle], n + round(OFFSET[angle] * FPS)))
    assert out and first >= 0
    return out


def seg(*parts: tuple[str, float, float]) -> list[dict[str, Any]]:
    return [{"angle": a, "start": s, "end": e} for a, s, e in parts]


def assert_av_sync(path: Path, seconds: float) -> None:
    ends = stream_ends(path)
    assert ends.video_end == pytest.approx(seconds, abs=FRAME)
    assert ends.audio_end is not None
    assert abs(ends.audio_end - ends.video_end) < FRAME


def test_reencode_is_frame_accurate_at_every_cut(run_export: Run) -> None:
    # Given cuts that are not on frame boundaries, across three angles with offsets
    cuts = [("cam1", 0.0, 0.71), ("cam2", 0.71, 1.49), ("cam3", 1.49, 2.013), ("cam1", 2.013, 3.5)]
    job = {"angles": ANGLES, "segments": seg(*cuts), "mode": "reencode", "output": FAST}
    # When the export runs
    ctx, out = run_export(job)
    # Then every frame (so the last before and first after each cut) is the right one
    got = [(colour, number) for colour, number, _ in read_frames(out)]
    assert got == expected_frames(cuts)
    assert ctx.preflight is not None and ctx.preflight["path"] == "reencode"
    assert len(ctx.commands) == 1  # one ffmpeg pass
    assert_av_sync(out, 105 * FRAME)
    # And the master audio (cam1) keeps its bursts at whole seconds of source time
    assert [round(t, 2) for t in audio_onsets(out)] == [0.0, 1.0, 2.0, 3.0]
    # Progress never goes back (ffmpeg's -progress under -copyts counts from its first
    # report, so a job this short may report nothing at all)
    assert ctx.progress == sorted(ctx.progress)
    assert decode_errors(ctx.ffmpeg, out) == ""


def test_mixed_sources_are_normalised(run_export: Run) -> None:
    # Given a phone angle: 240x160 shown rotated (portrait), 25 fps, mono 44.1 kHz
    cuts = [("cam1", 0.0, 1.0), ("phone", 1.0, 2.5), ("cam2", 2.5, 3.0)]
    job = {
        "angles": ANGLES,
        "segments": seg(*cuts),
        "mode": "reencode",
        "audio": {"mode": "follow"},
        "output": {**FAST, "size": {"mode": "height", "height": 240}},
    }
    _, out = run_export(job)
    frames = []
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        assert container.streams.audio[0].codec_context.sample_rate == 48000
        assert container.streams.audio[0].codec_context.channels == 2
        for frame in container.decode(stream):
            frames.append(frame.reformat(format="yuv420p"))
    assert len(frames) == 90
    assert [colour_of(f) for f in frames] == ["red"] * 30 + ["blue"] * 45 + ["green"] * 15
    # The portrait phone picture is pillarboxed: black (luma 16) at the left edge
    phone = frames[40]
    assert bytes(phone.planes[0])[120 * phone.planes[0].line_size + 4] < 40
    # Follow audio: cam1 at 0, the phone (source 2.0) at 1.7, cam2 (source 3.0) at 2.5
    assert [round(t, 2) for t in audio_onsets(out)] == [0.0, 1.7, 2.5]
    assert_av_sync(out, 3.0)


def test_copy_reports_snapped_cuts_and_decodes_cleanly(run_export: Run) -> None:
    # Given red and green (same encoder settings), a cut off the 2 s keyframes
    job = {
        "angles": ANGLES[:2],
        "segments": seg(("cam1", 0.0, 1.7), ("cam2", 1.7, 3.5)),
        "mode": "copy",
    }
    ctx, out = run_export(job)
    # Then the cut moved to cam2's keyframe at source 2.0 (timeline 1.5) and says so
    snapped = [(w["path"], w["requested"], round(w["actual"], 4)) for w in ctx.warnings]
    assert snapped == [("segments[1]", 1.7, 1.5)]
    frames = [(c, n) for c, n, _ in read_frames(out)]
    assert frames == [("red", n) for n in range(45)] + [("green", n) for n in range(60, 120)]
    assert decode_errors(ctx.ffmpeg, out) == ""
    assert_av_sync(out, 3.5)
    assert [round(t, 2) for t in audio_onsets(out)] == [0.0, 1.0, 2.0, 3.0]
    # The in-process copy reports progress too, in order and within 0..1.
    copy_progress = [f for step, f in ctx.reported if step == "copy"]
    assert copy_progress and copy_progress == sorted(copy_progress)
    assert copy_progress[0] >= 0.0 and copy_progress[-1] <= 1.0
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"


def test_auto_copies_when_exact_and_reencodes_otherwise(run_export: Run) -> None:
    exact = {"angles": ANGLES[:2], "segments": seg(("cam1", 0.0, 1.5), ("cam2", 1.5, 3.5))}
    ctx, out = run_export(exact)
    assert ctx.preflight is not None and ctx.preflight["path"] == "copy" and not ctx.warnings
    assert decode_errors(ctx.ffmpeg, out) == ""
    moved = {
        "angles": ANGLES[:2],
        "segments": seg(("cam1", 0.0, 1.6), ("cam2", 1.6, 3.5)),
        "output": FAST,
    }
    ctx, out = run_export(moved)
    assert ctx.preflight is not None and ctx.preflight["path"] == "smart"
    assert "not on keyframes" in ctx.preflight["reason"] and not ctx.warnings
    assert [(c, n) for c, n, _ in read_frames(out)] == [("red", n) for n in range(48)] + [
        ("green", n + 15) for n in range(48, 105)
    ]
    mixed = {**moved, "angles": [ANGLES[0], {**ANGLES[1], "source": "blue.mp4"}]}
    ctx, out = run_export(mixed)
    assert ctx.preflight is not None and ctx.preflight["path"] == "reencode"
    assert "smart render is not possible" in ctx.preflight["reason"]


def test_copy_with_follow_audio(run_export: Run) -> None:
    job = {
        "angles": ANGLES[:2],
        "segments": seg(("cam1", 0.0, 1.5), ("cam2", 1.5, 3.5)),
        "mode": "copy",
        "audio": {"mode": "follow"},
    }
    ctx, out = run_export(job)
    # cam1 bursts at 0 and 1; cam2's source 2.0 and 3.0 land at 1.5 and 2.5
    assert [round(t, 2) for t in audio_onsets(out)] == [0.0, 1.0, 1.5, 2.5]
    assert decode_errors(ctx.ffmpeg, out) == ""
    assert_av_sync(out, 3.5)


def test_external_audio_is_aligned_by_its_offset(
    run_export: Run, media_root: Path, ffmpeg: str
) -> None:
    # Given a recorder whose burst is at its source time 2.0, started 1.0 s before timeline 0
    make_burst_wav(ffmpeg, media_root, at=2.0, seconds=6.0).rename(media_root / "mic.wav")
    job = {
        "angles": ANGLES[:1],
        "segments": seg(("cam1", 0.0, 3.0)),
        "range": {"start": 0.4, "end": 3.0},
        "mode": "reencode",
        "output": FAST,
        "audio": {"mode": "external", "source": "mic.wav", "offset": 1.0, "gainDb": -3},
    }
    _, out = run_export(job)
    # Then the burst is at timeline 1.0, i.e. 0.6 s into the exported range
    assert [round(t, 2) for t in audio_onsets(out)] == [0.6]
    assert_av_sync(out, 2.6)


@pytest.mark.parametrize(
    ("output", "codecs"),
    [
        ({"container": "webm", "videoCodec": "vp9", "preset": "8", "crf": 40}, ("vp9", "opus")),
        ({"container": "mkv", "videoCodec": "hevc", "preset": "ultrafast"}, ("hevc", "aac")),
        ({"container": "mp4", "videoCodec": "av1", "preset": "12"}, ("av1", "aac")),
        (
            {
                "container": "mov",
                "fps": 25,
                "size": {"mode": "exact", "width": 96, "height": 96, "fit": "crop"},
                **FAST,
            },
            ("h264", "aac"),
        ),
    ],
)
def test_output_formats(run_export: Run, output: dict[str, Any], codecs: tuple[str, str]) -> None:
    job = {
        "angles": ANGLES[:2],
        "segments": seg(("cam1", 0.0, 1.0), ("cam2", 1.0, 2.0)),
        "mode": "reencode",
        "output": output,
    }
    ctx, out = run_export(job)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.codec.canonical_name == codecs[0]
        assert container.streams.audio[0].codec_context.codec.canonical_name == codecs[1]
    fps = output.get("fps", FPS)
    ends = stream_ends(out)
    assert ends.video_end == pytest.approx(2.0, abs=1 / fps)
    assert ends.audio_end is not None and abs(ends.audio_end - 2.0) < 1 / fps
    assert decode_errors(ctx.ffmpeg, out) == ""


def test_no_audio(run_export: Run) -> None:
    job = {
        "angles": ANGLES[:1],
        "segments": seg(("cam1", 0.0, 1.0)),
        "mode": "reencode",
        "audio": {"mode": "none"},
        "output": FAST,
    }
    _, out = run_export(job)
    assert stream_ends(out).audio_end is None


def test_source_too_short_fails_before_ffmpeg(run_export: Run) -> None:
    job = {
        "angles": ANGLES[:2],
        "segments": seg(("cam1", 0.0, 1.0), ("cam2", 1.0, 3.8)),
        "mode": "reencode",
    }
    with pytest.raises(JobError) as info:
        run_export(job)
    assert info.value.code is ErrorCode.SOURCE_TOO_SHORT
    assert info.value.message == (
        "segments[1] needs cam2 until 4.300 s but green.mp4 ends at 4.000 s"
    )


def test_many_short_pieces_of_the_same_angles(
    run_export: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 12 pieces alternating between two angles (each angle is one input list),
    # and a graph long enough to be passed to ffmpeg in a file
    monkeypatch.setattr(graph, "GRAPH_INLINE_LIMIT", 100)
    bounds = [0.0, 0.23, 0.51, 0.8, 1.1, 1.37, 1.66, 2.0, 2.21, 2.5, 2.83, 3.1, 3.5]
    cuts = [(("cam1", "cam2")[i % 2], bounds[i], bounds[i + 1]) for i in range(12)]
    job = {"angles": ANGLES[:2], "segments": seg(*cuts), "mode": "reencode", "output": FAST,
           "audio": {"mode": "follow"}}  # fmt: skip
    ctx, out = run_export(job)
    assert "-/filter_complex" in ctx.commands[0]
    assert [(c, n) for c, n, _ in read_frames(out)] == expected_frames(cuts)
    assert_av_sync(out, 3.5)
    assert decode_errors(ctx.ffmpeg, out) == ""


@pytest.mark.parametrize("audio", [None, {"mode": "follow"}], ids=["copied", "encoded"])
def test_copy_into_matroska(run_export: Run, audio: dict[str, str] | None) -> None:
    job = {"angles": ANGLES[:2], "segments": seg(("cam1", 0.0, 1.5), ("cam2", 1.5, 3.5)),
           "mode": "copy", "output": {"container": "mkv", "videoCodec": "copy"},
           **({"audio": audio} if audio else {})}  # fmt: skip
    ctx, out = run_export(job)
    assert out.name == "export.mkv" and ctx.published[0].mime_type == "video/x-matroska"
    assert [(c, n) for c, n, _ in read_frames(out)][44:46] == [("red", 44), ("green", 60)]
    assert decode_errors(ctx.ffmpeg, out) == ""
    assert_av_sync(out, 3.5)
    # Matroska has no edit list: no audio packet before 0 (pre-roll, priming), or its
    # muxer would start every stream ~21 ms late
    with av.open(str(out)) as container:
        assert [s.start_time for s in container.streams] == [0, 0]


def test_matroska_sources_in_copy_and_reencode(
    run_export: Run, media_root: Path, ffmpeg: str
) -> None:
    # Given two angles in Matroska (which stores no decode times: libavformat derives them
    # from a decoded frame, so its readers keep their probe decode, unlike MP4's)
    for colour in ("red", "green"):
        mkv = media_root / f"{colour}.mkv"
        if not mkv.exists():
            subprocess.run(
                [ffmpeg, "-v", "error", "-i", str(media_root / f"{colour}.mp4"), "-c", "copy",
                 str(mkv)],
                check=True,
            )  # fmt: skip
    angles = [{**a, "source": a["source"].replace(".mp4", ".mkv")} for a in ANGLES[:2]]
    cuts = [("cam1", 0.0, 1.5), ("cam2", 1.5, 3.5)]  # cam2's source 2.0 s: a keyframe
    # When they are copied (cuts on keyframes), and re-encoded with a cut off a keyframe
    copied_ctx, copied = run_export({"angles": angles, "segments": seg(*cuts), "mode": "copy"})
    recut = [("cam1", 0.0, 1.3), ("cam2", 1.3, 3.5)]
    encoded_ctx, encoded = run_export(
        {"angles": angles, "segments": seg(*recut), "mode": "reencode", "output": FAST}
    )
    # Then every frame is the expected one, in sync, decoded without a word
    assert [(c, n) for c, n, _ in read_frames(copied)] == expected_frames(cuts)
    assert [(c, n) for c, n, _ in read_frames(encoded)] == expected_frames(recut)
    for ctx, out in ((copied_ctx, copied), (encoded_ctx, encoded)):
        assert decode_errors(ctx.ffmpeg, out) == ""
        assert_av_sync(out, 3.5)
        log = ctx.log.getvalue()
        assert "out of order" not in log and "Could not find codec parameters" not in log


def test_an_mpegts_source_is_read_from_the_keyframe_before_each_cut(
    run_export: Run, media_root: Path, ffmpeg: str
) -> None:
    # Given an MPEG-TS angle: its video starts after its audio (the file's start time), and
    # its demuxer seeks by decode time, to the first keyframe decoded at or after the target
    ts = media_root / "red.ts"
    if not ts.exists():
        subprocess.run(
            [ffmpeg, "-v", "error", "-i", str(media_root / "red.mp4"), "-c", "copy", str(ts)],
            check=True,
        )
    angles = [{"id": "cam1", "source": "red.ts"}, ANGLES[1]]
    # When it is re-encoded from the timeline's start, and from the middle of a GOP
    for cuts in ([("cam1", 0.0, 3.0)], [("cam2", 0.0, 1.3), ("cam1", 1.3, 3.0)]):
        _, out = run_export(
            {"angles": angles, "segments": seg(*cuts), "mode": "reencode", "output": FAST}
        )
        # Then each piece starts with its own first frame and moves on frame by frame (the
        # seeks had landed a GOP late: frozen frames, or a piece's video missing)
        shown = [(c, n) for c, n, _ in read_frames(out)]
        assert len(shown) == 90
        ts_frames = [n for c, n in shown if c == "red"]
        first_red = next(i for i, (c, _) in enumerate(shown) if c == "red")
        assert abs(ts_frames[0] - first_red) <= 1, shown  # output frame k: source k
        assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(ts_frames)), ts_frames


def test_only_the_output_is_left_in_the_job_folder(run_export: Run) -> None:
    job = {"angles": ANGLES[:2], "segments": seg(("cam1", 0.0, 1.0), ("cam2", 1.0, 2.0)),
           "mode": "reencode", "audio": {"mode": "follow"},
           "output": {**FAST, "fileName": "a b"}}  # fmt: skip
    _, out = run_export(job)
    assert sorted(p.name for p in out.parent.iterdir()) == ["a_b.mp4"]


def test_unreadable_source(run_export: Run, media_root: Path) -> None:
    (media_root / "notes.mp4").write_text("not a video")
    job = {"angles": [{"id": "cam1", "source": "notes.mp4"}], "segments": seg(("cam1", 0, 1))}
    with pytest.raises(JobError) as info:
        run_export(job)
    assert info.value.code is ErrorCode.SOURCE_UNREADABLE


def test_audio_angle_without_audio(run_export: Run, media_root: Path, ffmpeg: str) -> None:
    from mediagen import Clip, make_clip

    make_clip(ffmpeg, Clip("green", audio=False), media_root).rename(media_root / "mute.mp4")
    job = {"angles": [{"id": "cam1", "source": "mute.mp4"}], "segments": seg(("cam1", 0, 1)),
           "mode": "reencode"}  # fmt: skip
    with pytest.raises(JobError) as info:
        run_export(job)
    assert info.value.code is ErrorCode.UNSUPPORTED_MEDIA
    assert "has no audio stream" in info.value.message


def test_failed_verification_publishes_nothing(
    run_export: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import spooler.export.kind as kind_module

    real = kind_module.plan_export

    def lying_plan(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        return dataclasses.replace(plan, duration=plan.duration + 1)

    monkeypatch.setattr(kind_module, "plan_export", lying_plan)
    job = {"angles": ANGLES[:1], "segments": seg(("cam1", 0, 1)), "mode": "reencode",
           "output": FAST}  # fmt: skip
    with pytest.raises(JobError) as info:
        run_export(job)
    assert info.value.code is ErrorCode.VERIFY_FAILED
    assert "video lasts 1.000 s, expected 2.000 s" in info.value.message


def test_configured_limits_are_enforced() -> None:
    from spooler.config import Settings
    from spooler.loader import load_job

    job = {"angles": ANGLES[:2], "segments": seg(("cam1", 0, 1), ("cam2", 1, 2))}
    with pytest.raises(JobError) as info:
        load_job(json.dumps(job).encode(), Settings(export={"max_segments": 1}))
    assert info.value.code is ErrorCode.INVALID_JOB
    assert info.value.details["errors"][0]["path"] == "segments"


def test_variable_frame_rate_source_gives_constant_rate_output(
    run_export: Run, media_root: Path, ffmpeg: str
) -> None:
    from mediagen import Clip, make_clip

    # Given a phone clip whose timestamps wobble by 12 ms and that misses every 7th frame
    clip = make_clip(ffmpeg, Clip("blue", jitter=0.012, drop_every=7), media_root)
    source = [(n, t) for _, n, t in read_frames(clip)]
    assert len(source) < 120  # frames are really missing
    clip.rename(media_root / "vfr.mp4")
    job = {"angles": [{"id": "phone", "source": "vfr.mp4", "syncOffset": 0.5}],
           "segments": seg(("phone", 0.0, 3.0)), "mode": "reencode",
           "output": {**FAST, "fps": 30}}  # fmt: skip
    _, out = run_export(job)
    # Then the output has exactly 90 frames at 30 fps, and output frame k shows the last
    # source frame whose time, rounded to the output grid, is not after it
    frames = read_frames(out)
    assert [round(t * 30) for _, _, t in frames] == list(range(90))
    slots = [(round((t - 0.5) * 30), n) for n, t in source]
    expected = [max(n for slot, n in slots if slot <= k) for k in range(90)]
    assert [n for _, n, _ in frames] == expected
    assert_av_sync(out, 3.0)
