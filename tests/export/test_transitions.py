"""Transitions with real ffmpeg: crossfades blend, dips go through the colour, nothing outside
a window changes, the duration never drifts, audio follows, ranges show the same frames."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from export_support import FakeContext, decode_errors
from mediagen import COLOURS, audio_onsets, read_frames

from spooler.errors import ErrorCode, JobError
from spooler.media import stream_ends

Run = Callable[..., tuple[FakeContext, Path]]
FPS = 30
ANGLES = [
    {"id": "cam1", "source": "red.mp4"},
    {"id": "cam2", "source": "green.mp4", "syncOffset": 0.5},
    {"id": "cam3", "source": "yellow.mp4", "syncOffset": -0.2},
]
FAST = {"preset": "ultrafast"}
LOSSLESS = {"preset": "ultrafast", "crf": 0}


def seg(*parts: tuple[str, float, float], **transitions: Any) -> list[dict[str, Any]]:
    """Segments; keyword `t2={...}` puts a transition on segments[2]."""
    out = [{"angle": a, "start": s, "end": e} for a, s, e in parts]
    for key, value in transitions.items():
        out[int(key[1:])]["transition"] = value
    return out


def chroma(path: Path) -> list[tuple[int, int, int]]:
    """(Y, U, V) at a point in the flat colour area of every frame."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frame = frame.reformat(format="yuv420p")
            y, u, v = (bytes(p) for p in frame.planes)
            out.append(
                (
                    y[80 * frame.planes[0].line_size + 80],
                    u[40 * frame.planes[1].line_size + 40],
                    v[40 * frame.planes[2].line_size + 40],
                )
            )
    return out


def planes(path: Path) -> list[tuple[bytes, bytes, bytes]]:
    with av.open(str(path)) as container:
        return [
            tuple(bytes(p) for p in f.reformat(format="yuv420p").planes)  # type: ignore[misc]
            for f in container.decode(video=0)
        ]


def test_crossfade_blends_both_angles_and_keeps_every_other_frame(run_export: Run) -> None:
    # Given red until 1.5 s, then green with a 0.4 s crossfade: window frames [39, 51)
    job = {
        "angles": ANGLES[:2],
        "segments": seg(
            ("cam1", 0, 1.5), ("cam2", 1.5, 3), t1={"type": "crossfade", "duration": 0.4}
        ),
        "mode": "reencode",
        "output": FAST,
    }
    ctx, out = run_export(job)
    frames = read_frames(out)
    # Then the output lasts exactly the timeline (90 frames), as without the transition
    assert len(frames) == 90 and stream_ends(out).video_end == pytest.approx(3.0, abs=1e-3)
    # Every frame outside the window is the same source frame a hard cut shows
    for n, (colour, number, _) in enumerate(frames):
        if n < 39:
            assert (colour, number) == ("red", n)
        elif n >= 51:
            assert (colour, number) == ("green", n + 15)
    # Inside, window frame j shows j/12 of green: the cut frame (45) is an even blend
    values = chroma(out)
    (ru, rv), (gu, gv) = COLOURS["red"], COLOURS["green"]
    for j in range(12):
        _, u, v = values[39 + j]
        assert abs(u - (ru + (gu - ru) * j / 12)) <= 2 and abs(v - (rv + (gv - rv) * j / 12)) <= 2
    assert abs(values[45][1] - (ru + gu) / 2) <= 1 and abs(values[45][2] - (rv + gv) / 2) <= 1
    report = ctx.preflight["output"]["transitions"]  # type: ignore[index]
    assert report == [{"at": "segments[1].transition", "type": "crossfade", "frames": [39, 51]}]
    assert decode_errors(ctx.ffmpeg, out) == ""


@pytest.mark.parametrize(("kind", "luma"), [("fadeblack", 16), ("fadewhite", 235)])
def test_a_dip_goes_through_the_colour_at_the_cut(run_export: Run, kind: str, luma: int) -> None:
    # Given a 0.4 s dip at 1.5 s: red fades over frames [39, 45), green in over [45, 51)
    job = {
        "angles": ANGLES[:2],
        "switches": [
            {"at": 0, "angle": "cam1"},
            {"at": 1.5, "angle": "cam2", "transition": {"type": kind, "duration": 0.4}},
        ],
        "end": 3,
        "mode": "reencode",
        "output": FAST,
    }
    _, out = run_export(job)
    values = chroma(out)
    assert len(values) == 90
    # Then the cut frame is the colour itself (luma at the colour's level, no chroma) ...
    y, u, v = values[45]
    assert abs(y - luma) <= 3 and abs(u - 128) <= 3 and abs(v - 128) <= 3
    # ... the picture moves towards it step by step on both sides ...
    distance = [abs(values[n][0] - luma) + abs(values[n][2] - 128) for n in range(39, 52)]
    assert distance[:7] == sorted(distance[:7], reverse=True)
    assert distance[6:] == sorted(distance[6:])
    # ... and frames outside the window are untouched
    frames = read_frames(out)
    assert [(c, n) for c, n, _ in frames[:39]] == [("red", n) for n in range(39)]
    assert [(c, n) for c, n, _ in frames[51:]] == [("green", n + 15) for n in range(51, 90)]


def test_total_duration_with_many_transitions_matches_the_timeline(run_export: Run) -> None:
    # Given a default crossfade, one dip override and one hard-cut override
    cuts = [("cam1", 0, 0.9), ("cam2", 0.9, 1.7), ("cam3", 1.7, 2.3), ("cam1", 2.3, 3.1)]
    job = {
        "angles": ANGLES,
        "segments": seg(*cuts, t2={"type": "fadeblack", "duration": 0.5}, t3={"type": "cut"}),
        "transition": {"type": "crossfade", "duration": 0.3},
        "mode": "reencode",
        "audio": {"mode": "follow"},
        "output": FAST,
    }
    ctx, out = run_export(job)
    # Then the output has round(3.1 * 30) = 93 frames and its audio ends with them
    ends = stream_ends(out)
    assert ends.video_frames == 93
    assert ends.video_end == pytest.approx(3.1, abs=1e-3)
    assert ends.audio_end is not None and abs(ends.audio_end - ends.video_end) < 1 / FPS
    # Windows: 0.9 +- 0.15 s -> frames [23, 32); 1.7 +- 0.25 s -> [43, 58) (the float 1.7 is
    # a hair below 17/10, so 43.5 and 58.5 round down)
    windows = ctx.preflight["output"]["transitions"]  # type: ignore[index]
    assert [(w["at"], w["type"], w["frames"]) for w in windows] == [
        ("transition", "crossfade", [23, 32]),
        ("segments[2].transition", "fadeblack", [43, 58]),
    ]
    # The hard cut at 2.3 s (frame 69) is exact: yellow then red, no blend
    frames = read_frames(out)
    assert [(c, n) for c, n, _ in frames[67:71]] == [
        ("yellow", 61),
        ("yellow", 62),
        ("red", 69),
        ("red", 70),
    ]
    assert decode_errors(ctx.ffmpeg, out) == ""


def test_a_range_inside_a_window_shows_the_frames_of_the_whole_export(run_export: Run) -> None:
    # Given the same edit exported whole and from 1.4 s (inside the crossfade [1.3, 1.7) s
    # and the dip [2.25, 2.75) s around 2.5 s) to 2.6 s, losslessly
    edit = seg(
        ("cam1", 0, 1.5),
        ("cam2", 1.5, 2.5),
        ("cam1", 2.5, 3.2),
        t1={"type": "crossfade", "duration": 0.4},
        t2={"type": "fadewhite", "duration": 0.5},
    )
    whole = {"angles": ANGLES[:2], "segments": edit, "mode": "reencode", "output": LOSSLESS}
    _, full = run_export(whole)
    _, part = run_export({**whole, "range": {"start": 1.4, "end": 2.6}})
    # Then the range's frames are exactly frames 42..77 of the whole export
    assert planes(part) == planes(full)[42:78]


def test_audio_crossfades_under_a_crossfade(run_export: Run) -> None:
    # Given follow audio and a cut at 1.9 s: red's burst at 2.0 s lies after the cut, inside
    # a 0.6 s crossfade window [1.6, 2.2) s, where red still has 1/3 of the gain
    def job(transition: dict[str, Any] | None) -> dict[str, Any]:
        edit = seg(("cam1", 0, 1.9), ("cam2", 1.9, 3.0))
        if transition:
            edit[1]["transition"] = transition
        return {
            "angles": ANGLES[:2],
            "segments": edit,
            "mode": "reencode",
            "audio": {"mode": "follow"},
            "output": FAST,
        }

    _, hard = run_export(job(None))
    _, soft = run_export(job({"type": "crossfade", "duration": 0.6}))
    # Then the hard cut drops red's burst at 2.0 s; the crossfade keeps it, softer
    assert [round(t, 2) for t in audio_onsets(hard)] == [0.0, 1.0, 2.5]
    assert [round(t, 2) for t in audio_onsets(soft)] == [0.0, 1.0, 2.0, 2.5]
    assert [round(t, 2) for t in audio_onsets(soft, threshold=0.2)] == [0.0, 1.0, 2.5]
    ends = stream_ends(soft)
    assert ends.audio_end is not None and ends.video_end is not None
    assert abs(ends.audio_end - ends.video_end) < 1 / FPS


def test_master_audio_stays_continuous_under_transitions(run_export: Run) -> None:
    job = {
        "angles": ANGLES[:2],
        "segments": seg(("cam1", 0, 1.5), ("cam2", 1.5, 3.5)),
        "transition": {"type": "crossfade", "duration": 1.0},
        "mode": "reencode",
        "output": FAST,
    }
    _, out = run_export(job)
    # cam1's bursts at every whole second, through the transition
    assert [round(t, 2) for t in audio_onsets(out)] == [0.0, 1.0, 2.0, 3.0]


def test_auto_reencodes_for_a_transition(run_export: Run) -> None:
    # Given cuts on keyframes (auto would copy) and a crossfade
    job = {
        "angles": ANGLES[:2],
        "segments": seg(("cam1", 0.0, 1.5), ("cam2", 1.5, 3.5)),
        "transition": {"type": "crossfade", "duration": 0.2},
        "output": FAST,
    }
    ctx, _ = run_export(job)
    assert ctx.preflight is not None and ctx.preflight["path"] == "reencode"
    assert "transition (crossfade) needs re-encoding" in ctx.preflight["reason"]


def test_a_crossfade_needs_its_sources_to_cover_the_overlap(run_export: Run) -> None:
    # Given cam3 (whose source starts at timeline 0.2) coming in at 0.3 s with a 0.4 s
    # crossfade: it would have to start at 0.1 s
    job = {
        "angles": ANGLES,
        "segments": seg(
            ("cam1", 0, 0.3), ("cam3", 0.3, 2), t1={"type": "crossfade", "duration": 0.4}
        ),
        "mode": "reencode",
    }
    with pytest.raises(JobError) as info:
        run_export(job)
    assert info.value.code is ErrorCode.SOURCE_TOO_SHORT
    assert info.value.message == (
        "segments[1].transition needs cam3 at -0.100 s but yellow.mp4 starts at 0.000 s "
        "(check its sync offset)"
    )
    # A dip needs nothing beyond the segments: the same cut fades through black
    job["segments"][1]["transition"] = {"type": "fadeblack", "duration": 0.4}  # type: ignore[index]
    _, out = run_export(job)
    assert stream_ends(out).video_frames == 60


# --- the layout, pure ---------------------------------------------------------------------


def layout_of(job: dict[str, Any]) -> Any:
    from fractions import Fraction

    from spooler.export.models import ExportJob
    from spooler.export.timeline import job_pieces, quantise
    from spooler.export.transitions import layout

    spec = ExportJob.model_validate(job)
    return layout(spec, quantise(job_pieces(spec), Fraction(FPS)), Fraction(FPS))


def test_layout_without_transitions_is_the_pieces() -> None:
    plan = layout_of({"angles": ANGLES[:2], "segments": seg(("cam1", 0, 1), ("cam2", 1, 2))})
    assert plan.plain and [(p.angle, p.first, p.stop) for p in plan.reads] == [
        ("cam1", 0, 30),
        ("cam2", 30, 60),
    ]
    # A transition shorter than two frames is a hard cut
    tiny = {"type": "crossfade", "duration": 0.03}
    plan = layout_of(
        {"angles": ANGLES[:2], "segments": seg(("cam1", 0, 1), ("cam2", 1, 2), t1=tiny)}
    )
    assert plan.plain


def test_layout_clips_windows_to_the_range_but_reads_them_whole() -> None:
    # Given a crossfade [39, 51) and a dip [69, 75, 81) around 2.5 s, exported from 1.4 s
    # (frame 42) to 2.6 s (frame 78)
    job = {
        "angles": ANGLES[:2],
        "segments": seg(
            ("cam1", 0, 1.5),
            ("cam2", 1.5, 2.5),
            ("cam1", 2.5, 3.2),
            t1={"type": "crossfade", "duration": 0.4},
            t2={"type": "fadeblack", "duration": 0.4},
        ),
        "range": {"start": 1.4, "end": 2.6},
    }
    plan = layout_of(job)
    reads = [(r.angle, r.first, r.stop, r.label) for r in plan.reads]
    assert reads == [
        ("cam1", 39, 51, "segments[1].transition"),  # the whole window, both angles
        ("cam2", 39, 51, "segments[1].transition"),
        ("cam2", 51, 75, "segments[1]"),  # fades out to black at 75
        ("cam1", 75, 78, "segments[2]"),  # fades in from black, clipped at the range end
    ]
    parts = [(p.first, p.stop, p.reads, [(f.out, f.first, f.stop) for f in p.fades])
             for p in plan.parts]  # fmt: skip
    assert parts == [
        (42, 51, (0, 1), []),
        (51, 75, (2,), [(True, 69, 75)]),
        (75, 78, (3,), [(False, 75, 81)]),
    ]
