"""Pure tests of the timeline and the planner: no ffmpeg, no disk."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import graph
from spooler.export.commands import AudioCopy, PlanPaths, fmt
from spooler.export.ffconcat import ConcatList
from spooler.export.models import ExportJob
from spooler.export.plan import plan_export
from spooler.export.sources import Source
from spooler.export.timeline import Piece, clip, frame_index, job_pieces, merge_same_angle, quantise
from spooler.media import FORMAT_WHITELIST, MediaInfo, VideoIndex, VideoPacket

PATHS = PlanPaths(
    Path("/jobs/j/.out.mp4"),
    Path("/jobs/j/.audio.mp4"),
    Path("/jobs/j/.graph"),
    tuple(Path(f"/jobs/j/.list{i}") for i in range(4)),
)
SETTINGS = Settings(media_roots=[Path("/media")])


def synthetic_index(fps: int, seconds: float, gop: int, bframes: bool) -> VideoIndex:
    """x264-like packets: closed GOPs; with B-frames, mini-GOPs of P + 3 B (display order
    I B B B P ...), decode order I P B B B ..., DTS two frames behind."""
    total = round(fps * seconds)
    order: list[int] = []
    for start in range(0, total, gop):
        end = min(start + gop, total)
        order.append(start)
        if not bframes:
            order += list(range(start + 1, end))
            continue
        m = start + 1
        while m < end:
            anchor = min(m + 3, end - 1)
            order += [anchor, *range(m, anchor)]
            m = anchor + 1
    packets = tuple(
        VideoPacket(pts=pts, dts=i - (2 if bframes else 0), duration=1, keyframe=pts % gop == 0)
        for i, pts in enumerate(order)
    )
    return VideoIndex(Fraction(1, fps), Fraction(0), packets)


def source(
    name: str,
    *,
    fps: int = 30,
    seconds: float = 300,
    gop: int = 60,
    bframes: bool = True,
    width: int = 1920,
    height: int = 1080,
    rotation: int = 0,
) -> Source:
    info = MediaInfo(
        duration=seconds,
        format_name="mov,mp4",
        video_codec="h264",
        width=width,
        height=height,
        fps=Fraction(fps),
        time_base=Fraction(1, fps),
        pix_fmt="yuv420p",
        rotation=rotation,
        extradata=b"avcC",
        audio_codec="aac",
        sample_rate=48000,
        channels=2,
    )
    return Source(name, Path("/media") / name, info, synthetic_index(fps, seconds, gop, bframes))


SOURCES = {s.name: s for s in (source("cam1.mp4"), source("cam2.mp4"), source("cam3.mp4"))}
# Without B-frames every frame boundary is a clean place for the outgoing angle to stop.
IPPP = {s.name: s for s in (source(n, bframes=False) for n in ("cam1.mp4", "cam2.mp4", "cam3.mp4"))}


def job(segments: list[tuple[str, float, float]], **extra: Any) -> ExportJob:
    return ExportJob.model_validate(
        {
            "angles": [
                {"id": "cam1", "source": "cam1.mp4"},
                {"id": "cam2", "source": "cam2.mp4", "syncOffset": 1.0},
                {"id": "cam3", "source": "cam3.mp4", "syncOffset": -0.5},
            ],
            "segments": [{"angle": a, "start": s, "end": e} for a, s, e in segments],
            **extra,
        }
    )


# --- timeline -----------------------------------------------------------------------------


def test_quantise_rounds_each_cut_once_from_absolute_time() -> None:
    # Given 3,000 pieces each 1/3 frame longer than a whole frame
    fps = Fraction(30)
    step = Fraction(4, 90)  # 1.333 frames
    pieces = [Piece("a" if i % 2 else "b", i * step, (i + 1) * step, f"s{i}") for i in range(3000)]
    # When they are quantised
    frames = quantise(pieces, fps)
    # Then every boundary is the rounded absolute time and nothing accumulated
    assert frames[-1].stop == frame_index(3000 * step, fps) == 4000
    assert all(a.stop == b.first for a, b in itertools.pairwise(frames))
    assert sum(f.frames for f in frames) == 4000


def test_quantise_drops_sub_frame_pieces_and_merges_neighbours() -> None:
    fps = Fraction(30)
    pieces = [
        Piece("a", Fraction(0), Fraction(1), "0"),
        Piece("b", Fraction(1), Fraction(101, 100), "1"),
        Piece("a", Fraction(101, 100), Fraction(2), "2"),
    ]
    frames = quantise(pieces, fps)
    assert [(f.angle, f.first, f.stop) for f in frames] == [("a", 0, 60)]


def test_clip_and_merge() -> None:
    pieces = [
        Piece("a", Fraction(0), Fraction(5), "0"),
        Piece("a", Fraction(5), Fraction(8), "1"),
        Piece("b", Fraction(8), Fraction(10), "2"),
    ]
    assert merge_same_angle(clip(pieces, Fraction(2), Fraction(9))) == [
        Piece("a", Fraction(2), Fraction(8), "0"),
        Piece("b", Fraction(8), Fraction(9), "2"),
    ]


def test_switches_become_segments() -> None:
    spec = ExportJob.model_validate(
        {
            "angles": [{"id": "a", "source": "a.mp4"}, {"id": "b", "source": "b.mp4"}],
            "switches": [{"at": 1, "angle": "a"}, {"at": 3, "angle": "b"}, {"at": 4, "angle": "b"}],
            "end": 6,
        }
    )
    assert job_pieces(spec) == [
        Piece("a", Fraction(1), Fraction(3), "switches[0]"),
        Piece("b", Fraction(3), Fraction(6), "switches[1]"),
    ]


# --- reencode -----------------------------------------------------------------------------


def test_reencode_is_one_ffmpeg_pass_with_one_whitelisted_input_per_angle() -> None:
    spec = job([("cam1", 0, 10.01), ("cam2", 10.01, 20), ("cam1", 20, 30)], mode="reencode")
    plan = plan_export(spec, SOURCES, SETTINGS, PATHS)
    assert plan.mode == "reencode" and len(plan.commands) == 1
    command = plan.commands[0]
    args = command.args
    # Given 3 pieces on 2 angles: one ffconcat input per angle, plus the audio bed
    inputs = [args[i + 1] for i, a in enumerate(args) if a == "-i"]
    assert inputs == ["file:/jobs/j/.list0", "file:/jobs/j/.list1", "file:/jobs/j/.list2"]
    for i, arg in enumerate(args):
        if arg == "-i":
            assert args[i - 8 : i] == [
                *("-f", "concat", "-safe", "0", "-protocol_whitelist", "file"),
                *("-format_whitelist", "concat"),
            ]
    assert args[0] == "-copyts" and args.count("-filter_complex") == 1
    cam1 = command.files[PATHS.lists[0]].splitlines()
    assert cam1[1] == "file 'file:/media/cam1.mp4'"
    # cam1's second piece starts at timeline frame 600 (20.0 s): read from 2 frames before
    # to 2 frames + 0.2 s after, then a gap longer than the 2 s GOP (+1 s)
    # (its first piece reads from the file's start: no inpoint, so no seek)
    assert cam1[2:6] == [
        f"option format_whitelist {FORMAT_WHITELIST}",
        "option protocol_whitelist file",
        "option codec_whitelist none",
        "outpoint 10.266667",
    ]
    assert cam1[7:14] == [
        "file 'file:/media/cam1.mp4'",
        f"option format_whitelist {FORMAT_WHITELIST}",
        "option protocol_whitelist file",
        "option codec_whitelist none",  # no entry's probe decodes a frame (ffconcat.py)
        "inpoint 19.933333",
        "outpoint 30.266667",
        "duration 13.333334",
    ]
    assert plan.duration == Fraction(900, 30)  # 30 s at 30 fps: cuts moved, total not
    assert plan.preflight["output"]["frames"] == 900
    graph = args[args.index("-filter_complex") + 1]
    assert "trim=end_frame=300" in graph and "concat=n=3:v=1:a=0" in graph
    # Each cam1 frame goes to its own piece's branch only: the second piece's from half a
    # second past the first piece's outpoint (10.266667 s on the list's timeline)
    assert "[0:v:0]select='(1+gte(t,10.766667))':n=2[i0v0][i0v1];" in graph
    assert "[1:v:0]null[i1v0];" in graph and "setpts=PTS-" in graph
    assert args[-1] == "file:/jobs/j/.out.mp4"


def _video_read(
    postroll: bool, sources: dict[str, Source], starts: tuple[int, ...] = (20, 40)
) -> tuple[list[str], str]:
    """A video-only read of 1-s spans of cam1 (timeline s..s+1 for each s in `starts`): its
    ffconcat lines and its routing chain."""
    spec = job([("cam1", 20, 41)])  # only its angles matter here
    spans = [graph.Span("cam1", Fraction(s), Fraction(s + 1), f"s{s}") for s in starts]
    g = graph.Graph()
    graph.piece_inputs(
        spec, sources, g, spans, list(PATHS.lists), lambda _: Fraction(2, 30),
        video=True, audio=False, postroll=postroll,
    )  # fmt: skip
    return g.files[PATHS.lists[0]].splitlines(), g.chains[0]


def _directive(lines: list[str], name: str) -> list[Fraction]:
    return [Fraction(line.split()[1]) for line in lines if line.startswith(f"{name} ")]


def _outpoints(postroll: bool, sources: dict[str, Source]) -> list[Fraction]:
    """The outpoints of a video-only read of two spans of cam1 (timeline 20..21 s, 40..41 s)."""
    return _directive(_video_read(postroll, sources)[0], "outpoint")


def _up(at: Fraction) -> Fraction:
    """The microsecond at or above (ffconcat.py rounds an outpoint outwards)."""
    return Fraction(math.ceil(at * 10**6), 10**6)


# The synthetic index's structure at a span's end (frame 630 = 21 s, 1230 = 41 s: 30
# frames into a GOP): decode order ... P632 B629 B630 B631, decode times 2 frames behind.
# The last packet a frame before the end needs is B629, decoded at frame 628: P632 comes
# before it; B630 and B631, decoded at frames 629 and 630, are not read.
LAST_NEEDED_DTS = {21: Fraction(628, 30), 41: Fraction(1228, 30)}
KEEP = Fraction(1, 10**6)  # a microsecond past a decode time keeps that packet


def test_a_video_only_read_stops_after_the_last_packet_its_frames_need() -> None:
    # Given cam1 whose audio runs 0.1 s ahead of its video in the file
    lead = {"cam1.mp4": replace(SOURCES["cam1.mp4"], index=replace(
        SOURCES["cam1.mp4"].index, interleave_lead=0.1))}  # fmt: skip
    # When smart's parts read it (postroll=False) and when a read keeps the postroll
    exact, padded = _outpoints(False, lead), _outpoints(True, lead)
    # Then each of smart's MP4 entries ends a microsecond past the decode time of the last
    # packet its frames need, plus the lead: no margin past it (the next entry's warm-up
    # or the input's end closes its trim), nor the B-frames decoded after it; a postroll
    # read keeps the 2-frame margin past its span and 0.2 s more
    lead_s = Fraction(0.1)  # the float the index holds, as graph.py reads it
    assert exact == [_up(LAST_NEEDED_DTS[end] + KEEP + lead_s) for end in (21, 41)]
    assert padded == [_up(end + Fraction(2, 30) + lead_s + graph.POSTROLL) for end in (21, 41)]
    # (and before the first frame, no packet is needed)
    assert lead["cam1.mp4"].index is not None
    assert lead["cam1.mp4"].index.last_needed_decode(Fraction(0)) is None


def test_a_non_mp4_video_only_read_stops_at_its_span_plus_its_decode_lag() -> None:
    # Given cam1 in MPEG-TS, whose decode times a demuxer may guess after a seek
    ts = {"cam1.mp4": replace(SOURCES["cam1.mp4"], info=replace(
        SOURCES["cam1.mp4"].info, format_name="mpegts"))}  # fmt: skip
    # Then smart's entries end at the span's end (decode lag 0), not at the index's
    # decode times, and still with no margin past it
    assert _outpoints(False, ts) == [_up(Fraction(end)) for end in (21, 41)]


def test_a_video_only_read_routes_the_next_warm_up_to_the_span_before() -> None:
    # When smart's parts read two spans of cam1 (20..21 s, 40..41 s)
    lines, route = _video_read(False, SOURCES)
    # Then every frame before one frame ahead of the second span's first (the second
    # entry's warm-up, from the keyframe at or before its inpoint 2 frames ahead) goes to
    # the first span's branch, where the first past its end closes its trim
    inpoint = _directive(lines, "inpoint")[1]
    second_starts = _directive(lines, "duration")[0]  # on the list's own timeline
    join = second_starts + (40 - Fraction(1, 30) - inpoint)
    assert route == f"[0:v:0]select='(1+gte(t,{fmt(join)}))':n=2[i0v0][i0v1]"
    # while a read that keeps the postroll parts them mid-gap, as the reencode does
    _, padded = _video_read(True, SOURCES)
    assert f"gte(t,{fmt(join)})" not in padded


def test_a_span_whose_next_read_has_no_warm_up_keeps_its_margin() -> None:
    # Given two spans of cam1 whose second starts at the file's start: its entry has no
    # inpoint, so no frame decoded before its first could close the first span's trim
    lines, _ = _video_read(False, SOURCES, starts=(20, 0))
    # Then the first entry reads its 2-frame margin past its span; the last stops after
    # the last packet its frames need (B29, decoded at frame 28)
    assert _directive(lines, "outpoint") == [
        _up(Fraction(21) + Fraction(2, 30)),
        _up(Fraction(28, 30) + KEEP),
    ]


def test_a_decode_lag_extends_a_video_only_read() -> None:
    # Given a file whose packets decode up to 2 frames after they are shown (negative
    # composition offsets: a stream copy of such a file keeps them)
    index = SOURCES["cam1.mp4"].index
    assert index is not None and index.decode_lag() == 0  # x264's: DTS two frames behind
    lagging = replace(index, packets=tuple(
        replace(p, dts=p.dts + 3) for p in index.packets))  # fmt: skip
    assert lagging.decode_lag() == Fraction(2, 30)
    late = {"cam1.mp4": replace(SOURCES["cam1.mp4"], index=lagging)}
    # Then a video-only read reaches as far as the last needed packet's later decode time,
    # so no frame it shows is cut off: in MP4 from the index, elsewhere by the lag
    assert _outpoints(False, late) == [
        _up(LAST_NEEDED_DTS[end] + Fraction(3, 30) + KEEP) for end in (21, 41)
    ]
    late_ts = {"cam1.mp4": replace(late["cam1.mp4"], info=replace(
        late["cam1.mp4"].info, format_name="mpegts"))}  # fmt: skip
    assert _outpoints(False, late_ts) == [_up(end + Fraction(2, 30)) for end in (21, 41)]


def test_ffconcat_quotes_file_names() -> None:
    listing = ConcatList(Path("/m/it's, [odd]:.mp4"), Fraction(0), Fraction(3))
    base = listing.add(Fraction(5), Fraction(7))
    assert base == 5
    assert listing.add(Fraction(1), Fraction(2)) == Fraction(1) - Fraction(5) == -4
    # The first entry's frames end at 2 s, the second's start after 5 - 3 s (one GOP early)
    assert listing.boundaries() == [Fraction(5, 2)]
    assert listing.text().splitlines()[1] == "file 'file:/m/it'\\''s, [odd]:.mp4'"


def test_reencode_normalises_mixed_sources() -> None:
    sources = {
        **SOURCES,
        "cam3.mp4": source("cam3.mp4", fps=25, width=1080, height=1920, rotation=90),
    }
    spec = job(
        [("cam1", 0, 5), ("cam3", 5, 10)],
        mode="reencode",
        output={"size": {"mode": "height", "height": 720}},
    )
    plan = plan_export(spec, sources, SETTINGS, PATHS)
    graph = plan.commands[0].args[plan.commands[0].args.index("-filter_complex") + 1]
    assert (plan.width, plan.height) == (1280, 720)
    assert graph.count("pad=1280:720") == 2 and "fps=fps=30/1" in graph
    assert "aformat=sample_fmts=fltp:channel_layouts=stereo" in graph


def test_many_pieces_keep_one_input_per_angle_and_the_graph_goes_to_a_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(graph, "GRAPH_INLINE_LIMIT", 10_000)
    cuts = [(("cam1", "cam2", "cam3")[i % 3], i * 1.01, (i + 1) * 1.01) for i in range(280)]
    plan = plan_export(job(cuts, mode="reencode"), SOURCES, SETTINGS, PATHS)
    command = plan.commands[0]
    assert command.args.count("-i") == 4  # three angles + the audio bed
    assert "-/filter_complex" in command.args and PATHS.graph in command.files
    assert ":n=94[i0v0]" in command.files[PATHS.graph]  # select: 94 pieces on cam1
    listing = command.files[PATHS.lists[0]]
    assert listing.count("outpoint") == 94 and listing.count("inpoint") == 93  # 1st: 0 s


def test_coverage_is_checked_with_a_precise_message() -> None:
    spec = job([("cam1", 0, 100), ("cam2", 100, 300)], mode="reencode")
    with pytest.raises(JobError) as info:
        plan_export(spec, SOURCES, SETTINGS, PATHS)
    assert info.value.code is ErrorCode.SOURCE_TOO_SHORT
    assert info.value.message == (
        "segments[1] needs cam2 until 301.000 s but cam2.mp4 ends at 300.000 s"
    )


def test_negative_offset_before_source_start_is_reported() -> None:
    spec = job([("cam3", 0, 10)], mode="reencode")
    with pytest.raises(JobError, match=r"segments\[0\] needs cam3 at -0.500 s"):
        plan_export(spec, SOURCES, SETTINGS, PATHS)


# --- copy and auto ------------------------------------------------------------------------


def test_copy_snaps_cuts_to_keyframes_and_reports_them() -> None:
    # cam2's keyframes are at source 0, 2, 4 ... = timeline -1, 1, 3 ...
    spec = job([("cam1", 0, 10.4), ("cam2", 10.4, 20)], mode="copy")
    plan = plan_export(spec, IPPP, SETTINGS, PATHS)
    assert plan.mode == "copy"
    assert [(s.label, s.requested, round(s.actual, 6)) for s in plan.snaps] == [
        ("segments[1]", 10.4, 11.0)
    ]
    # The master angle's AAC is copied as it is: no ffmpeg step at all
    assert plan.commands == [] and isinstance(plan.copy_audio, AudioCopy)
    assert (plan.copy_audio.start, plan.copy_audio.end) == (0, 20)
    assert plan.duration == 20


def test_copy_encodes_audio_it_cannot_copy() -> None:
    spec = job([("cam1", 0, 11), ("cam2", 11, 20)], mode="copy", audio={"mode": "follow"})
    plan = plan_export(spec, IPPP, SETTINGS, PATHS)
    assert [c.step for c in plan.commands] == ["audio"] and plan.copy_audio == PATHS.audio
    graph = plan.commands[0].args[plan.commands[0].args.index("-filter_complex") + 1]
    assert "concat=n=2:v=0:a=1" in graph and "afade=t=out" in graph


def test_auto_copies_when_every_cut_is_on_a_keyframe() -> None:
    spec = job([("cam1", 0, 11), ("cam2", 11, 20)])
    plan = plan_export(spec, IPPP, SETTINGS, PATHS)
    assert plan.mode == "copy" and not plan.snaps and "already on a keyframe" in plan.reason


def test_auto_reencodes_when_copy_would_move_a_cut() -> None:
    plan = plan_export(job([("cam1", 0, 10.4), ("cam2", 10.4, 20)]), IPPP, SETTINGS, PATHS)
    assert plan.mode == "reencode" and "not on keyframes" in plan.reason


def test_auto_reencodes_incompatible_angles_and_copy_refuses_them() -> None:
    sources = {**IPPP, "cam2.mp4": source("cam2.mp4", width=1280, height=720, bframes=False)}
    plan = plan_export(job([("cam1", 0, 11), ("cam2", 11, 20)]), sources, SETTINGS, PATHS)
    assert plan.mode == "reencode" and "cam2's size differs" in plan.reason
    with pytest.raises(JobError) as info:
        plan_export(job([("cam1", 0, 11), ("cam2", 11, 20)], mode="copy"), sources, SETTINGS, PATHS)
    assert info.value.code is ErrorCode.UNSUPPORTED_MEDIA


def test_copy_refuses_a_cut_no_clean_point_is_near() -> None:
    # cam2's keyframes land on odd timeline seconds, where cam1 is inside a mini-GOP
    with pytest.raises(JobError, match="where cam1 can also stop cleanly"):
        plan_export(
            job([("cam1", 0, 10.4), ("cam2", 10.4, 20)], mode="copy"), SOURCES, SETTINGS, PATHS
        )


def test_clean_copy_points_respect_b_frames() -> None:
    index = synthetic_index(30, 4, 60, bframes=True)
    heads = {index.packets[i].pts for i in index.heads()}
    assert heads == {0, 60}
    tails = sorted(min(p.pts for p in index.packets[i:]) for i in index.tails()[:-1])
    # After I0 and after each P (display 4, 8, ...): never inside a mini-GOP.
    assert tails[:4] == [1, 5, 9, 13]


# --- the two edit forms give the same plan (property) -----------------------------------

angle_ids = st.sampled_from(["cam1", "cam2", "cam3"])


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=25),
    angles=st.lists(angle_ids, min_size=25, max_size=25),
    mode=st.sampled_from(["reencode", "auto", "copy"]),
    follow=st.booleans(),
)
def test_switches_and_segments_give_the_same_plan(
    gaps: list[int], angles: list[str], mode: str, follow: bool
) -> None:
    times = [1.0]
    for gap in gaps:
        times.append(round(times[-1] + gap / 37, 4))
    base: dict[str, Any] = {
        "angles": [
            {"id": "cam1", "source": "cam1.mp4"},
            {"id": "cam2", "source": "cam2.mp4", "syncOffset": 1.0},
            {"id": "cam3", "source": "cam3.mp4", "syncOffset": 0.5},
        ],
        "mode": mode,
        "audio": {"mode": "follow"} if follow else {"mode": "angle"},
    }
    as_segments = ExportJob.model_validate(
        {
            **base,
            "segments": [
                {"angle": angles[i], "start": times[i], "end": times[i + 1]}
                for i in range(len(gaps))
            ],
        }
    )
    as_switches = ExportJob.model_validate(
        {
            **base,
            "end": times[-1],
            "switches": [{"at": times[i], "angle": angles[i]} for i in range(len(gaps))],
        }
    )
    outcomes = []
    for spec in (as_segments, as_switches):
        try:
            plan = plan_export(spec, SOURCES, SETTINGS, PATHS)
        except JobError as exc:
            outcomes.append(("error", exc.code, exc.message.replace("switches", "segments")))
            continue
        outcomes.append(
            (
                "plan",
                plan.mode,
                [c.args for c in plan.commands],
                plan.duration,
                [(s.angle, s.head_dts, s.stop_dts, s.shift) for s in plan.copy_segments],
                [(s.angle, s.requested, s.actual) for s in plan.snaps],
            )
        )
    assert outcomes[0] == outcomes[1]


def test_smart_names_only_true_reasons_for_rotated_angles_and_unreadable_parameter_sets() -> None:
    from spooler.export.smart import smart_blockers

    # Given two angles rotated alike, and an angle whose avcC cannot be read (an Annex B
    # stream, as MPEG-TS carries)
    spec = job([("cam1", 0, 5), ("cam2", 5, 10)], mode="smart")
    rotated = {n: source(n, rotation=90) for n in ("cam1.mp4", "cam2.mp4", "cam3.mp4")}
    annex_b = {**SOURCES, "cam1.mp4": replace(SOURCES["cam1.mp4"], info=replace(
        SOURCES["cam1.mp4"].info, extradata=b""))}  # fmt: skip
    # When smart render is asked why not
    turned, _ = smart_blockers(spec, rotated, ["cam1", "cam2"])
    unreadable, _ = smart_blockers(spec, annex_b, ["cam1", "cam2"])
    # Then no angle is said to differ from itself, and the missing avcC is the one reason
    assert "cam1 has a rotation or non-square pixels" in turned
    assert not any("cam1's size or rotation differs" in r for r in turned), turned
    assert any(r.startswith("cam1's parameter sets cannot be read") for r in unreadable)
    assert not any("IDR" in r for r in unreadable), unreadable
