"""Every validation rule of the export job: a bad input, its error code and its JSON path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from spooler.config import ExportSettings
from spooler.errors import ErrorCode, JobError
from spooler.export.models import ExportJob, limit_errors
from spooler.export.output import OutputSpec
from spooler.kinds import parse_job

GOOD: dict[str, Any] = {
    "angles": [
        {"id": "cam1", "source": "day1/cam1.mp4"},
        {"id": "cam2", "source": "day1/cam2.mp4", "syncOffset": 1.5},
    ],
    "segments": [
        {"angle": "cam1", "start": 0, "end": 10},
        {"angle": "cam2", "start": 10, "end": 20},
    ],
}


def parse(job: dict[str, Any]) -> ExportJob:
    spec, kind = parse_job(json.dumps(job).encode())
    assert kind.name == "export"
    assert isinstance(spec, ExportJob)
    return spec


def first_error(job: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(JobError) as info:
        parse(job)
    assert info.value.code is ErrorCode.INVALID_JOB
    error = info.value.details["errors"][0]
    assert info.value.message.startswith(f"{error['path']}: ")
    return error["code"], error["path"]


def edited(**changes: Any) -> dict[str, Any]:
    job = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        target: Any = job
        *parents, last = dotted.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return job


DELETE = object()


def _bad_source(source: str, case: str) -> Any:
    """A parametrize case: the job with this first angle source fails as `source_path`."""
    return pytest.param(
        edited(angles__0__source=source), "source_path", "angles[0].source", id=case
    )


def test_good_job_parses_with_defaults() -> None:
    # Given a job file without "kind" (what the web app writes)
    spec = parse(GOOD)
    # Then it is an export with the documented defaults
    assert spec.kind == "export" and spec.mode == "auto"
    assert spec.audio.mode == "angle" and spec.audio_angle == "cam1"
    assert spec.output.container == "mp4" and spec.output.safe_file_name == "export.mp4"


def test_switches_form_parses() -> None:
    job = {
        **{k: v for k, v in GOOD.items() if k != "segments"},
        "switches": [{"at": 0, "angle": "cam1"}, {"at": 4, "angle": "cam2"}],
        "end": 9,
    }
    assert parse(job).switches is not None


@pytest.mark.parametrize(
    ("job", "code", "path"),
    [
        pytest.param(edited(angles=[]), "too_short", "angles", id="no-angles"),
        pytest.param(
            edited(angles__0__id="cam 1"),
            "string_pattern_mismatch",
            "angles[0].id",
            id="angle-id-pattern",
        ),
        pytest.param(
            edited(angles__1__id="cam1"), "duplicate_angle", "angles[1].id", id="dup-angle"
        ),
        _bad_source("/etc/passwd", "absolute-source"),
        _bad_source("a/../../x.mp4", "dotdot-source"),
        _bad_source("-i.mp4", "dash-source"),
        _bad_source("day/-x.mp4", "dash-component"),
        _bad_source("concat:a.mp4|b.mp4", "protocol-source"),
        _bad_source("https://user@x/a.mp4", "url-with-user-info"),
        _bad_source("s3://Bad_Bucket/a.mp4", "s3-bad-bucket"),
        _bad_source("ftp://x/a.mp4", "other-protocol"),
        _bad_source("a\\b.mp4", "backslash-source"),
        _bad_source("", "empty"),
        pytest.param(
            edited(angles__0__syncOfset=1),
            "extra_forbidden",
            "angles[0].syncOfset",
            id="typo-field",
        ),
        pytest.param(edited(segments=DELETE), "edit_form", "segments", id="no-edit"),
        pytest.param(
            edited(switches=[{"at": 0, "angle": "cam1"}], end=3),
            "edit_form",
            "segments",
            id="both-forms",
        ),
        pytest.param(edited(segments=[]), "too_short", "segments", id="empty-segments"),
        pytest.param(
            edited(segments__1__angle="cam9"),
            "unknown_angle",
            "segments[1].angle",
            id="segment-angle",
        ),
        pytest.param(
            edited(segments__1__end=10), "segment_order", "segments[1].end", id="end-before-start"
        ),
        pytest.param(
            edited(segments__1__start=11), "not_contiguous", "segments[1].start", id="gap"
        ),
        pytest.param(
            edited(segments__1__start=9), "not_contiguous", "segments[1].start", id="overlap"
        ),
        pytest.param(
            edited(segments__0__start=-1),
            "greater_than_equal",
            "segments[0].start",
            id="negative-start",
        ),
        pytest.param(edited(end=20), "edit_form", "end", id="end-with-segments"),
        pytest.param(
            edited(range={"start": 5, "end": 5}), "range_order", "range.end", id="range-order"
        ),
        pytest.param(
            edited(range={"start": 5, "end": 25}), "range_outside", "range", id="range-outside"
        ),
        pytest.param(
            edited(audio={"mode": "angle", "angle": "cam9"}),
            "unknown_angle",
            "audio.angle",
            id="audio-angle",
        ),
        pytest.param(edited(audio={"mode": "mic"}), "union_tag_invalid", "audio", id="audio-mode"),
        pytest.param(
            edited(audio={"mode": "external", "source": "../x.wav"}),
            "source_path",
            "audio.external.source",
            id="audio-source",
        ),
        pytest.param(
            edited(audio={"mode": "external", "source": "x.wav", "gainDb": 40}),
            "less_than_equal",
            "audio.external.gainDb",
            id="audio-gain",
        ),
        pytest.param(
            edited(output={"container": "avi"}), "literal_error", "output.container", id="container"
        ),
        pytest.param(
            edited(output={"container": "webm", "videoCodec": "h264"}),
            "codec_container",
            "output.videoCodec",
            id="codec-container",
        ),
        pytest.param(
            edited(output={"container": "mov", "videoCodec": "h264", "audioCodec": "opus"}),
            "codec_container",
            "output.audioCodec",
            id="audio-codec-container",
        ),
        pytest.param(
            edited(output={"crf": 20, "videoBitrateKbps": 4000}),
            "quality_conflict",
            "output.crf",
            id="crf-and-bitrate",
        ),
        pytest.param(edited(output={"crf": 60}), "crf_range", "output.crf", id="crf-range"),
        pytest.param(
            edited(output={"crf": 64, "videoCodec": "vp9", "container": "webm"}),
            "less_than_equal",
            "output.crf",
            id="crf-max",
        ),
        pytest.param(
            edited(output={"preset": "ludicrous"}), "preset", "output.preset", id="preset"
        ),
        pytest.param(
            edited(output={"videoCodec": "av1", "preset": "medium"}),
            "preset",
            "output.preset",
            id="preset-av1",
        ),
        pytest.param(
            edited(output={"videoCodec": "copy", "crf": 20}),
            "copy_option",
            "output.crf",
            id="copy-crf",
        ),
        pytest.param(
            edited(output={"videoCodec": "copy", "size": {"mode": "height", "height": 720}}),
            "copy_option",
            "output.size",
            id="copy-size",
        ),
        pytest.param(
            edited(output={"videoCodec": "copy", "fps": 25}),
            "copy_option",
            "output.fps",
            id="copy-fps",
        ),
        pytest.param(
            edited(output={"videoCodec": "copy"}, mode="reencode"),
            "copy_option",
            "output.videoCodec",
            id="copy-reencode",
        ),
        pytest.param(edited(output={"fps": "fast"}), "fps", "output.fps", id="fps-text"),
        pytest.param(edited(output={"fps": 500}), "fps", "output.fps", id="fps-range"),
        pytest.param(
            edited(output={"size": {"mode": "height", "height": 721}}),
            "multiple_of",
            "output.size.height.height",
            id="odd-height",
        ),
        pytest.param(
            edited(
                output={"size": {"mode": "exact", "width": 640, "height": 360, "fit": "stretch"}}
            ),
            "literal_error",
            "output.size.exact.fit",
            id="fit",
        ),
        pytest.param(
            edited(output={"fileName": "../x.mp4"}), "file_name", "output.fileName", id="file-path"
        ),
        pytest.param(
            edited(output={"audioBitrateKbps": 8}),
            "greater_than_equal",
            "output.audioBitrateKbps",
            id="audio-bitrate",
        ),
        pytest.param(edited(mode="fast"), "literal_error", "mode", id="mode"),
        pytest.param(edited(priority=5000), "less_than_equal", "priority", id="priority"),
    ],
)
def test_validation_rule(job: dict[str, Any], code: str, path: str) -> None:
    assert first_error(job) == (code, path)


def switches_job(**extra: Any) -> dict[str, Any]:
    job = {k: v for k, v in GOOD.items() if k != "segments"}
    return {
        **job,
        "switches": [{"at": 0, "angle": "cam1"}, {"at": 4, "angle": "cam2"}],
        "end": 9,
        **extra,
    }


@pytest.mark.parametrize(
    ("job", "code", "path"),
    [
        pytest.param(switches_job(switches=[]), "too_short", "switches", id="empty"),
        pytest.param(
            switches_job(switches=[{"at": 0, "angle": "cam1"}, {"at": 4, "angle": "x"}]),
            "unknown_angle",
            "switches[1].angle",
            id="angle",
        ),
        pytest.param(
            switches_job(switches=[{"at": 4, "angle": "cam1"}, {"at": 4, "angle": "cam2"}]),
            "switch_order",
            "switches[1].at",
            id="order",
        ),
        pytest.param(switches_job(end=None), "missing", "end", id="no-end"),
        pytest.param(switches_job(end=4), "switch_order", "end", id="end-order"),
        pytest.param(
            switches_job(switches=[{"at": -1, "angle": "cam1"}]),
            "greater_than_equal",
            "switches[0].at",
            id="negative",
        ),
    ],
)
def test_switch_validation_rule(job: dict[str, Any], code: str, path: str) -> None:
    if job.get("end") is None:
        job.pop("end", None)
    assert first_error(job) == (code, path)


def test_nan_is_rejected_before_validation() -> None:
    raw = json.dumps(GOOD).replace('"syncOffset": 1.5', '"syncOffset": NaN').encode()
    with pytest.raises(JobError) as info:
        parse_job(raw)
    assert info.value.code is ErrorCode.INVALID_JSON


@pytest.mark.parametrize(
    ("limits", "path"),
    [
        (ExportSettings(max_angles=1), "angles"),
        (ExportSettings(max_segments=1), "segments"),
        (ExportSettings(max_timeline_seconds=19), "segments"),
    ],
)
def test_configurable_limits(limits: ExportSettings, path: str) -> None:
    errors = limit_errors(parse(GOOD), limits)
    assert [(e["code"], e["path"]) for e in errors] == [("limit", path)]


def test_limits_count_the_range_not_the_timeline() -> None:
    job = parse(edited(range={"start": 2, "end": 8}))
    assert limit_errors(job, ExportSettings(max_timeline_seconds=10)) == []


@pytest.mark.parametrize(
    ("given", "container", "safe"),
    [
        ("export", "mp4", "export.mp4"),
        ("My Vidéo (final)", "mp4", "My_Video_final.mp4"),
        ("-rf.mp4", "mp4", "rf.mp4"),
        (".hidden", "mkv", "hidden.mkv"),
        ("clip.MP4", "mp4", "clip.mp4"),
        ("clip.mp4", "webm", "clip.mp4.webm"),
        ("***", "mov", "export.mov"),
    ],
)
def test_file_name_is_sanitised(given: str, container: str, safe: str) -> None:
    codec = "vp9" if container == "webm" else "h264"
    spec = OutputSpec.model_validate(
        {"fileName": given, "container": container, "videoCodec": codec}
    )
    assert spec.safe_file_name == safe


def test_fps_forms() -> None:
    assert OutputSpec(fps=29.97).fps_value == pytest.approx(30000 / 1001)
    assert OutputSpec(fps="24000/1001").fps_value == pytest.approx(24000 / 1001)
    assert OutputSpec().fps_value is None


# --- transitions, watermark, audio mix and loudness (issue 4) ----------------------------

CROSS = {"type": "crossfade", "duration": 1}
THREE: dict[str, Any] = {
    **GOOD,
    "segments": [
        {"angle": "cam1", "start": 0, "end": 10},
        {"angle": "cam2", "start": 10, "end": 11},
        {"angle": "cam1", "start": 11, "end": 20},
    ],
}


def three(**changes: Any) -> dict[str, Any]:
    job = copy.deepcopy(THREE)
    for key, value in changes.items():
        if key[0] == "t" and key[1:].isdigit():
            job["segments"][int(key[1:])]["transition"] = value
        else:
            job[key] = value
    return job


@pytest.mark.parametrize(
    ("job", "code", "path"),
    [
        pytest.param(
            three(t1={"type": "crossfade", "duration": -1}),
            "greater_than",
            "segments[1].transition.duration",
            id="negative-duration",
        ),
        pytest.param(
            three(transition={"type": "crossfade", "duration": 0}),
            "greater_than",
            "transition.duration",
            id="zero-default",
        ),
        pytest.param(
            three(t1={"type": "wipe"}), "literal_error", "segments[1].transition.type", id="type"
        ),
        pytest.param(
            three(t1={"duration": 1}), "missing", "segments[1].transition.type", id="no-type"
        ),
        pytest.param(
            three(t0=CROSS), "transition_position", "segments[0].transition", id="first-segment"
        ),
        pytest.param(
            # 2.5 s: half (1.25 s) does not fit in cam2's 1 s
            three(t1={"type": "crossfade", "duration": 2.5}),
            "transition_too_long",
            "segments[1].transition.duration",
            id="longer-than-segment",
        ),
        pytest.param(
            # 1 s + 1.2 s at both ends of cam2's 1 s stretch: the windows would overlap
            three(t1=CROSS, t2={"type": "fadeblack", "duration": 1.2}),
            "transition_too_long",
            "segments[2].transition.duration",
            id="overlapping-windows",
        ),
        pytest.param(
            three(transition={"type": "fadewhite", "duration": 1.5}),
            "transition_too_long",
            "transition.duration",
            id="default-too-long",
        ),
        pytest.param(
            three(t1=CROSS, mode="copy"), "needs_reencode", "segments[1].transition", id="copy"
        ),
        pytest.param(
            edited(watermark={"image": "../logo.png"}),
            "source_path",
            "watermark.image",
            id="watermark-path",
        ),
        pytest.param(
            edited(watermark={"image": "logo.png", "opacity": 1.5}),
            "less_than_equal",
            "watermark.opacity",
            id="watermark-opacity",
        ),
        pytest.param(
            edited(watermark={"image": "logo.png", "scale": 0}),
            "greater_than",
            "watermark.scale",
            id="watermark-scale",
        ),
        pytest.param(
            edited(watermark={"image": "logo.png", "position": "middle"}),
            "literal_error",
            "watermark.position",
            id="watermark-position",
        ),
        pytest.param(
            edited(watermark={"image": "logo.png", "start": 5, "end": 4}),
            "range_order",
            "watermark.end",
            id="watermark-order",
        ),
        pytest.param(
            edited(watermark={"image": "logo.png", "start": 25}),
            "range_outside",
            "watermark.start",
            id="watermark-outside",
        ),
        pytest.param(
            edited(watermark={"image": "logo.png"}, mode="copy"),
            "needs_reencode",
            "watermark",
            id="watermark-copy",
        ),
        pytest.param(
            edited(audio={"mode": "external", "source": "m.wav", "ambient": {"angle": "cam9"}}),
            "unknown_angle",
            "audio.external.ambient.angle",
            id="ambient-angle",
        ),
        pytest.param(
            edited(
                audio={
                    "mode": "external",
                    "source": "m.wav",
                    "ambient": {"angle": "cam1", "gainDb": -99},
                }
            ),
            "greater_than_equal",
            "audio.external.ambient.gainDb",
            id="ambient-gain",
        ),
        pytest.param(
            edited(audio={"mode": "follow", "loudness": {"targetLufs": 0}}),
            "less_than_equal",
            "audio.follow.loudness.targetLufs",
            id="loudness-target",
        ),
        pytest.param(
            edited(audio={"mode": "none", "loudness": {}}),
            "extra_forbidden",
            "audio.none.loudness",
            id="loudness-without-audio",
        ),
    ],
)
def test_new_field_validation_rule(job: dict[str, Any], code: str, path: str) -> None:
    assert first_error(job) == (code, path)


def test_transition_errors_say_what_does_not_fit() -> None:
    with pytest.raises(JobError) as info:
        parse(three(t1=CROSS, t2={"type": "fadeblack", "duration": 1.2}))
    assert info.value.message == (
        "segments[2].transition.duration: 1.2 s does not fit: half of it (0.6 s) is needed "
        "before the cut at 11 s, where cam2 has 0.5 s (its stretch 10-11 s less the "
        "transition at its start)"
    )


def test_transitions_that_are_fine() -> None:
    # Windows that exactly fill a stretch; a cut override of a default; a transition between
    # two segments of the same angle (no cut: ignored); copy with the transition outside the
    # range; a switch with a transition
    parse(three(t1=CROSS, t2=CROSS))
    parse(three(transition=CROSS, t2={"type": "cut"}))
    same = three(t1=CROSS)
    same["segments"][2]["angle"] = "cam2"
    same["segments"][2]["transition"] = {"type": "crossfade", "duration": 30}
    parse(same)
    parse(three(t1=CROSS, mode="copy", range={"start": 12, "end": 20}))
    spec = parse(
        {
            "angles": GOOD["angles"],
            "switches": [
                {"at": 0, "angle": "cam1"},
                {"at": 4, "angle": "cam2", "transition": CROSS},
            ],
            "end": 9,
        }
    )
    assert spec.edit_segments()[1][1].transition is not None


def test_existing_jobs_keep_their_meaning() -> None:
    spec = parse(GOOD)
    assert spec.transition is None and spec.watermark is None and spec.loudness is None
    assert all(s.transition is None for s in spec.segments or [])


# --- the text watermark ------------------------------------------------------------------

TEXT_ERRORS = [
    ({"image": "logo.png", "text": "Hi"}, "watermark_kind", "watermark"),
    ({"position": "center"}, "watermark_kind", "watermark"),
    ({"text": ""}, "string_too_short", "watermark.text"),
    ({"text": "x" * 201}, "string_too_long", "watermark.text"),
    ({"text": "   "}, "watermark_text", "watermark.text"),
    ({"text": "two\nlines"}, "watermark_text", "watermark.text"),
    ({"text": "tab\there"}, "watermark_text", "watermark.text"),
    ({"text": "bidi \u202eevil"}, "watermark_text", "watermark.text"),
    ({"text": "nul\x00"}, "watermark_text", "watermark.text"),
    ({"text": "Hi", "color": "red"}, "string_pattern_mismatch", "watermark.color"),
    ({"text": "Hi", "color": "#12345"}, "string_pattern_mismatch", "watermark.color"),
    ({"text": "Hi", "textSize": 0}, "greater_than", "watermark.textSize"),
    ({"text": "Hi", "textSize": 0.6}, "less_than_equal", "watermark.textSize"),
    ({"text": "Hi", "scale": 0.2}, "watermark_option", "watermark.scale"),
    ({"image": "logo.png", "textSize": 0.1}, "watermark_option", "watermark.textSize"),
    ({"image": "logo.png", "color": "black"}, "watermark_option", "watermark.color"),
    ({"text": "Hi", "start": 5, "end": 4}, "range_order", "watermark.end"),
]


@pytest.mark.parametrize(("mark", "code", "path"), TEXT_ERRORS)
def test_text_watermark_validation(mark: dict[str, Any], code: str, path: str) -> None:
    assert first_error(edited(watermark=mark)) == (code, path)


def test_text_watermark_messages_say_what_is_refused() -> None:
    with pytest.raises(JobError) as info:
        parse(edited(watermark={"text": "a\u2028b"}))
    assert "no control, format or line/paragraph separator characters (found U+2028)" in (
        info.value.message
    )
    with pytest.raises(JobError) as info:
        parse(edited(watermark={"text": "Hi", "scale": 0.2}))
    assert info.value.message == "watermark.scale: applies to an image watermark only"


def test_text_watermark_that_is_fine() -> None:
    hostile = "it's 100%: {pts} %{pts} \\n [x];, naïve 東京 ü"
    spec = parse(edited(watermark={"text": hostile, "color": "#A0b1C2", "textSize": 0.1}))
    assert spec.watermark is not None
    assert (spec.watermark.text, spec.watermark.image) == (hostile, None)
    assert parse(edited(watermark={"text": "x" * 200})).watermark is not None
