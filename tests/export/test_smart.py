"""Smart render with real ffmpeg: exact frames at every cut, a conformant joined stream.

Sources: 6 s at 30 fps, a keyframe every second (frames 0, 30, 60, ...), 3 B-frames with
x264's pyramid, so that clean stopping points are only every few frames. Every frame says
which angle and which source frame it is (mediagen), so the output is checked frame by frame.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from export_support import FakeContext, decode_errors
from mediagen import Clip, audio_onsets, make_clip, read_frames

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import ExportJob, ExportKind
from spooler.export.commands import PlanPaths
from spooler.export.gop import Frames, split_piece
from spooler.export.kind import _batches
from spooler.export.plan import plan_export
from spooler.export.sources import close_sources, inspect_sources, non_reference_packets
from spooler.ffmpeg import REFUSED_PROBE, RefusalFilter
from spooler.media import VideoIndex, VideoPacket, stream_ends

FPS = 30
SMART_CLIPS = {
    "sred": Clip("red", seconds=6, gop_seconds=1.0),
    "sgreen": Clip("green", seconds=6, gop_seconds=1.0),
    "syellow": Clip("yellow", seconds=6, gop_seconds=1.0),
    # Other encoder settings (no B-frames, another GOP): other SPS/PPS, cannot be copied
    # into the same track, so its pieces are encoded whole.
    "sblue": Clip("blue", width=160, height=120, seconds=6, gop_seconds=0.5, bframes=0),
}
OFFSETS = {"sred": 0, "sgreen": 3, "syellow": 0, "sblue": 0}  # in frames
COLOUR = {"sred": "red", "sgreen": "green", "syellow": "yellow", "sblue": "blue"}

# (angle, first timeline frame, stop): the cases the issue names.
EDIT = [
    ("sred", 0, 29),  # starts on a keyframe, stops one frame before the next one
    ("sgreen", 29, 58),  # source 32..61: in 2 after a keyframe, out one after the next
    ("syellow", 58, 59),  # a one-frame segment
    ("sred", 59, 91),  # in one frame before a keyframe
    ("sgreen", 91, 118),  # shorter than a GOP
    ("syellow", 118, 170),  # in 2 before a keyframe, then whole GOPs copied
]


@pytest.fixture(scope="module")
def smart_root(media_root: Path, ffmpeg: str) -> Path:
    for name, clip in SMART_CLIPS.items():
        link = media_root / f"{name}.mp4"
        if not link.exists():
            link.symlink_to(make_clip(ffmpeg, clip, media_root).name)
    return media_root


def _job(edit: list[tuple[str, int, int]], **extra: Any) -> dict[str, Any]:
    used = dict.fromkeys(angle for angle, _, _ in edit)
    return {
        "angles": [{"id": a, "source": f"{a}.mp4", "syncOffset": OFFSETS[a] / FPS} for a in used],
        "segments": [
            {"angle": a, "start": first / FPS, "end": stop / FPS} for a, first, stop in edit
        ],
        "mode": "smart",
        **extra,
    }


def _expected(edit: list[tuple[str, int, int]]) -> list[tuple[str, int]]:
    return [
        (COLOUR[angle], k + OFFSETS[angle])
        for angle, first, stop in edit
        for k in range(first, stop)
    ]


def test_only_refused_probes_and_their_repeats_are_filtered() -> None:
    quiet = RefusalFilter()
    lines = [
        "[h264 @ 0x1] [error] Codec (h264) not on whitelist 'none'",
        "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x2] [warning] Failed to open codec in "
        "avformat_find_stream_info",
        "    Last message repeated 3 times",
        "[h264 @ 0x3] [error] non-existing PPS 0 referenced",
        "    Last message repeated 2 times",
    ]
    kept = [line for line in lines if not quiet.drops(line)]
    assert kept == lines[3:]


def _decode_with(ffmpeg: str, decoder: str, path: Path) -> tuple[list[tuple[str, int]], str]:
    """(angle colour, source frame) of every frame one decoder outputs, and what it printed
    at warning level. The pictures go through a lossless intermediate (FFV1)."""
    lossless = path.with_name(f"{path.stem}.{decoder}.mkv")
    done = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-v", "warning", "-c:v", decoder, "-i", str(path),
         "-map", "0:v", "-c:v", "ffv1", "-y", str(lossless)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    frames = [(colour, number) for colour, number, _ in read_frames(lossless)]
    lossless.unlink()
    return frames, done.stderr.strip()


def test_every_frame_is_exact_and_both_decoders_agree(
    smart_root: Path, ffmpeg: str, run_export: Callable[..., tuple[FakeContext, Path]]
) -> None:
    ctx, out = run_export(_job(EDIT))
    report = ctx.preflight
    assert report is not None and report["path"] == "smart", report
    totals = report["output"]
    assert totals["frames"] == 170
    # Most frames were copied; each piece says what it did.
    assert totals["copiedFrames"] >= 90, report["segments"]
    assert totals["copiedFrames"] + totals["encodedFrames"] == 170
    whys = {s["label"]: s["why"] for s in report["segments"]}
    assert whys["segments[2]"].startswith("encoded whole")  # one frame: no keyframe inside
    assert "body copied" in whys["segments[5]"]

    # One conformant stream: ffmpeg's own decoder and OpenH264 (an independent one) both
    # decode it without a word at warning level, every frame the expected one. (OpenH264's
    # B-frame decoding is not bit-exact with x264 streams, the sources' own included, so
    # the frames are compared by content, not by hash.)
    for decoder in ("h264", "libopenh264"):
        frames, log = _decode_with(ffmpeg, decoder, out)
        assert log == "", decoder
        assert frames == _expected(EDIT), decoder
    assert decode_errors(ffmpeg, out) == ""
    # What ffmpeg says of each entry's refused probe decoder (ffconcat.ConcatList.probe;
    # the fuzz checker's smart test sees the refusal in the lists) is not in the job's log.
    encodes = [args for args in ctx.commands if "libx264" in args]
    assert encodes
    log = ctx.log.getvalue().splitlines()
    assert log and not [line for line in log if line.endswith(REFUSED_PROBE)]

    ends = stream_ends(out)
    assert ends.video_end is not None and ends.audio_end is not None
    assert abs(ends.video_end - 170 / FPS) < 1 / FPS
    assert abs(ends.audio_end - ends.video_end) < 1 / FPS
    # The master angle's audio is continuous across the cuts: its tone bursts (one per
    # whole second of source time) keep their one-second rhythm.
    onsets = audio_onsets(out)
    assert len(onsets) == 6
    assert all(abs(b - a - 1.0) < 0.02 for a, b in itertools.pairwise(onsets))
    # Intermediate files are gone; only the published output is left.
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_an_angle_with_other_parameter_sets_is_encoded_whole(
    smart_root: Path, ffmpeg: str, run_export: Callable[..., tuple[FakeContext, Path]]
) -> None:
    edit = [("sred", 0, 40), ("sblue", 40, 100), ("sred", 100, 150)]
    ctx, out = run_export(_job(edit))
    report = ctx.preflight
    assert report is not None and report["path"] == "smart"
    blue = report["segments"][1]
    assert blue["copiedFrames"] == 0
    assert "SPS/PPS" in blue["why"]
    for decoder in ("h264", "libopenh264"):
        assert _decode_with(ffmpeg, decoder, out) == (_expected(edit), ""), decoder


def test_auto_picks_smart_when_copy_would_move_a_cut(
    smart_root: Path, run_export: Callable[..., tuple[FakeContext, Path]]
) -> None:
    edit = [("sred", 0, 45), ("syellow", 45, 100)]
    ctx, out = run_export({**_job(edit), "mode": "auto", "audio": {"mode": "follow"}})
    assert ctx.preflight is not None and ctx.preflight["path"] == "smart"
    assert "cut(s) are not on keyframes" in ctx.preflight["reason"]
    assert [(c, n) for c, n, _ in read_frames(out)] == _expected(edit)
    ends = stream_ends(out)
    assert ends.audio_end is not None and abs(ends.audio_end - 100 / FPS) < 1 / FPS
    # Progress is weighted by what takes time: the encoders, not the audio or the copy.
    weights = {step.name: step.weight for step in ctx.steps}
    assert list(weights) == ["audio", "encode 1/2", "encode 2/2", "copy"]
    encoding = weights["encode 1/2"] + weights["encode 2/2"]
    assert encoding > 0.6 * sum(weights.values())


def test_an_encoded_audio_bed_runs_beside_the_video_encoders(
    smart_root: Path, tmp_path: Path
) -> None:
    # Given a smart job whose audio must be encoded (it follows the cut)
    spec = ExportJob.model_validate(
        {**_job([("sred", 0, 45), ("syellow", 45, 100)]), "audio": {"mode": "follow"}}
    )
    settings = Settings(media_roots=[smart_root], spool_dir=tmp_path / "spool")
    sources = inspect_sources(spec, [smart_root], {"sred", "syellow"})
    try:
        # When it is planned
        lists = tuple(tmp_path / f"{i}.ffconcat" for i in range(3 * (len(spec.angles) + 2)))
        paths = PlanPaths(tmp_path / "o.mp4", tmp_path / "a.mp4", tmp_path / "g.txt", lists, ())
        plan = plan_export(spec, sources, settings, paths)
    finally:
        close_sources(sources)
    # Then the audio command is one batch with the encoders (run at once), not before them
    assert plan.mode == "smart"
    batches = [[c.step for c in batch] for batch in _batches(plan.commands)]
    assert batches == [["audio", "encode 1/2", "encode 2/2"]]


def _decoded_parts(
    ffmpeg: str, args: list[str], files: dict[Path, str], fds: list[int]
) -> tuple[list[str], int]:
    """An encode command run up to its graph's output: the hash of every frame the
    encoder would get (the decoders, trims and joins, no encoder), and how many frames its
    decoders decoded (ffmpeg's closing statistics, verbose level)."""
    for path, text in files.items():
        path.write_text(text)
    graph = args[: args.index("-map")]  # the inputs and the filter graph
    done = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-v", "verbose", *graph, "-map", "[vout]",
         "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True, pass_fds=fds,
    )  # fmt: skip
    hashes = [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines() if line[0] != "#"]
    decoded = re.findall(
        r"\(video\): \d+ packets read \(\d+ bytes\); (\d+) frames decoded", done.stderr
    )
    return hashes, sum(map(int, decoded))


@contextlib.contextmanager
def _planning(
    smart_root: Path, tmp_path: Path, job: dict[str, Any] | None = None
) -> Iterator[tuple[Callable[..., Any], list[int]]]:
    """The EDIT's plan (or `job`'s), made on demand with a given reader of non-reference
    pictures (or None), and the open sources' descriptors for the commands' ffmpeg."""
    spec = ExportJob.model_validate(job or _job(EDIT))
    settings = Settings(media_roots=[smart_root], spool_dir=tmp_path / "spool")
    sources = inspect_sources(spec, [smart_root], set(OFFSETS) - {"sblue"})
    try:
        lists = tuple(tmp_path / f"{i}.ffconcat" for i in range(3 * (len(spec.angles) + 2)))
        paths = PlanPaths(tmp_path / "o.mp4", tmp_path / "a.mp4", tmp_path / "g.txt", lists, ())
        yield (
            lambda reader, **more: plan_export(spec, sources, settings, paths, reader, **more),
            [s.fd for s in sources.values() if s.fd is not None],
        )
    finally:
        close_sources(sources)


def test_warm_up_skips_non_reference_pictures_and_no_pixel_changes(
    smart_root: Path, ffmpeg: str, tmp_path: Path
) -> None:
    # Given the edit planned with the shell's reader of non-reference pictures, and without
    with _planning(smart_root, tmp_path) as (plan, fds):
        skipping, plain = plan(non_reference_packets), plan(None)
        # When each encode command's decoders and graph run, both ways
        pairs = [
            (
                _decoded_parts(ffmpeg, a.args, a.files, fds),
                _decoded_parts(ffmpeg, b.args, b.files, fds),
            )
            for a, b in zip(skipping.commands, plain.commands, strict=True)
            if a.step.startswith("encode")
        ]
    # Then warm-up packets were named (the sources have x264's B-pyramid: its lowest
    # B-frames are non-reference pictures), and not decoded: each command's decoders
    # decoded fewer frames (not always as many fewer as named: a few named past a part's
    # end are never read)...
    drops = [a for c in skipping.commands for a in c.args if a.startswith("noise=drop=")]
    assert drops and all("eq(pos\\," in d for d in drops)
    assert not any(a.startswith("noise=") for c in plain.commands for a in c.args)
    named = [
        sum(a.count("eq(pos") for a in c.args if a.startswith("noise="))
        for c in skipping.commands
        if c.step.startswith("encode")
    ]
    fewer = [want[1] - got[1] for got, want in pairs]
    assert all(n and d > 0 for n, d in zip(named, fewer, strict=True)), (named, fewer)
    # ...and every frame the encoders get is the same, bit for bit
    assert pairs and all(got[0] == want[0] and got[0] for got, want in pairs)


# EDIT without its one-frame segment: room for 0.2 s crossfades.
LONGER = [("sred", 0, 29), ("sgreen", 29, 58), ("syellow", 58, 91), ("sred", 91, 170)]


@pytest.mark.parametrize(
    ("edit", "more"),
    [(EDIT, {}), (LONGER, {"transition": {"type": "crossfade", "duration": 0.2}})],
    ids=["cuts", "crossfades"],
)
def test_the_reencode_skips_warm_up_non_reference_pictures_and_no_pixel_changes(
    smart_root: Path,
    ffmpeg: str,
    tmp_path: Path,
    edit: list[tuple[str, int, int]],
    more: dict[str, Any],
) -> None:
    # Given an edit re-encoded (hard cuts; crossfades, whose reads overlap and go through
    # fps), planned with the shell's reader of non-reference pictures, and without
    job = _job(edit, mode="reencode", audio={"mode": "none"}, **more)
    with _planning(smart_root, tmp_path, job) as (plan, fds):
        skipping, plain = plan(non_reference_packets), plan(None)
        assert skipping.mode == plain.mode == "reencode"
        # When its decoders and graph run, both ways
        (command,), (reference,) = skipping.commands, plain.commands
        got = _decoded_parts(ffmpeg, command.args, command.files, fds)
        want = _decoded_parts(ffmpeg, reference.args, reference.files, fds)
    # Then warm-up packets were named and not decoded...
    named = sum(a.count("eq(pos") for a in command.args if a.startswith("noise=drop="))
    assert not any(a.startswith("noise=") for a in reference.args)
    assert named and want[1] - got[1] > 0, (named, want[1], got[1])
    # ...and every frame the encoder gets is the same, bit for bit
    assert got[0] == want[0] and len(got[0]) == sum(stop - first for _, first, stop in edit)


def test_auto_re_encodes_when_an_angle_has_no_frame_at_the_start_its_edit_needs(
    smart_root: Path, ffmpeg: str, run_export: Callable[..., tuple[FakeContext, Path]]
) -> None:
    # Given an angle whose video starts 40 ms after its file's time 0 (an empty edit; its
    # sound at 0), cut from time 0: within the coverage check's slack, but no frame there
    late = smart_root / "slate.mp4"
    if not late.exists():
        subprocess.run(
            [ffmpeg, "-v", "error", "-nostdin", "-itsoffset", "0.04", "-i",
             str(smart_root / "sred.mp4"), "-i", str(smart_root / "sred.mp4"),
             "-map", "0:v", "-map", "1:a", "-c", "copy", str(late)],
            check=True,
        )  # fmt: skip
    job = _job([("sgreen", 40, 70)], mode="auto")
    job["angles"].insert(0, {"id": "slate", "source": "slate.mp4"})
    job["segments"].insert(0, {"angle": "slate", "start": 0, "end": 40 / FPS})
    # When it is exported in auto
    ctx, out = run_export(job)
    # Then smart render says why it cannot, and the reencode makes every frame
    report = ctx.preflight
    assert report is not None and report["path"] == "reencode", report
    assert "segments[0] needs a frame of slate before its first" in report["reason"]
    assert stream_ends(out).video_frames == 70


def test_the_encoders_share_the_cores_they_are_planned_for(
    smart_root: Path, tmp_path: Path
) -> None:
    # Given the edit planned for 4 cores and for 1 (two encode processes, the default)
    with _planning(smart_root, tmp_path) as (plan, _):
        four, one = plan(None, cores=4), plan(None, cores=1)
    assert four.mode == one.mode == "smart"

    def threads(planned: Any) -> set[str]:
        encodes = [c.args for c in planned.commands if c.step.startswith("encode")]
        assert len(encodes) == 2
        return {args[i + 1] for args in encodes for i, a in enumerate(args) if a == "-threads"}

    # Then every decoder and encoder of each process gets its half, at least one thread
    assert threads(four) == {"2"} and threads(one) == {"1"}


def test_a_command_names_at_most_max_dropped_packets(
    smart_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spooler.export import warmup

    # Given a budget of 12 dropped packets a command, and the edit planned with and without it
    with _planning(smart_root, tmp_path) as (plan, _):
        free = plan(non_reference_packets)
        monkeypatch.setattr(warmup, "MAX_DROPPED", 12)
        capped = plan(non_reference_packets)

    def named(plan: Any) -> list[int]:
        return [sum(a.count("eq(pos") for a in c.args) for c in plan.commands]

    # Then no command names more than that, and some did without it
    assert max(named(free)) > 12 and max(named(capped)) <= 12


def test_an_ffmpeg_without_input_bitstream_filters_decodes_every_packet(
    smart_root: Path, ffmpeg: str, tmp_path: Path
) -> None:
    # Given an ffmpeg that says it is 6.1 (before -bsf on an input), one built without the
    # noise bitstream filter, and the one we have
    def wrapper(name: str, version: str, bsfs: str) -> str:
        script = tmp_path / name
        script.write_text(
            "#!/bin/sh\n"
            f'if [ "$2" = "-version" ]; then echo "ffmpeg version {version} C"; exit 0; fi\n'
            f'if [ "$2" = "-bsfs" ]; then printf "Bitstream filters:\\n{bsfs}\\n"; exit 0; fi\n'
            f'exec "{ffmpeg}" "$@"\n'
        )
        script.chmod(0o755)
        return str(script)

    older = wrapper("ffmpeg-6", "6.1.1", "noise\\nnull")
    no_noise = wrapper("ffmpeg-9-no-noise", "n9.0.2-17-g2a571b6068", "null")
    job = ExportJob.model_validate(_job(EDIT))
    runs = {}
    for name, binary in (("older", older), ("no noise", no_noise), ("current", ffmpeg)):
        work = tmp_path / name
        work.mkdir()
        ctx = FakeContext(
            work, Settings(media_roots=[smart_root], spool_dir=tmp_path / "s"), binary
        )
        # When the same smart job runs with each
        ExportKind().run(job, ctx)
        runs[name] = [a for args in ctx.commands for a in args if a.startswith("noise=")]
    # Then only the current one is asked to drop packets (the others would refuse it)
    assert runs["current"] and not runs["older"] and not runs["no noise"]


def test_a_range_exports_exactly_its_frames(
    smart_root: Path, run_export: Callable[..., tuple[FakeContext, Path]]
) -> None:
    edit = [("sred", 0, 50), ("sgreen", 50, 120)]
    ctx, out = run_export({**_job(edit), "range": {"start": 17 / FPS, "end": 95 / FPS}})
    assert ctx.preflight is not None and ctx.preflight["path"] == "smart"
    expected = _expected(edit)[17:95]
    assert [(c, n) for c, n, _ in read_frames(out)] == expected
    ends = stream_ends(out)
    assert ends.video_end is not None and abs(ends.video_end - 78 / FPS) < 1 / FPS


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"output": {"size": {"mode": "height", "height": 60}}}, "output.size is not 'keep'"),
        ({"transition": {"type": "crossfade", "duration": 0.4}}, "transition"),
    ],
)
def test_smart_falls_back_to_reencode_with_a_warning(
    smart_root: Path,
    run_export: Callable[..., tuple[FakeContext, Path]],
    change: dict[str, Any],
    why: str,
) -> None:
    ctx, _out = run_export({**_job([("sred", 0, 45), ("syellow", 45, 70)]), **change})
    assert ctx.preflight is not None and ctx.preflight["path"] == "reencode"
    assert [w["code"] for w in ctx.warnings] == ["smart_unavailable"]
    assert why in ctx.warnings[0]["message"]


def test_a_poster_keeps_smart_and_renditions_need_reencoding(
    smart_root: Path, ffmpeg: str, tmp_path: Path
) -> None:
    def run(extra: dict[str, Any]) -> FakeContext:
        job_dir = tmp_path / str(len(list(tmp_path.iterdir())))
        job_dir.mkdir()
        ctx = FakeContext(job_dir, Settings(media_roots=[smart_root]), ffmpeg)
        ExportKind().run(ExportJob.model_validate({**_job(EDIT[:2]), **extra}), ctx)
        return ctx

    ctx = run({"poster": {"at": 1.0}})
    assert ctx.preflight is not None and ctx.preflight["path"] == "smart"
    assert [o.mime_type for o in ctx.published] == ["video/mp4", "image/jpeg"]
    ctx = run({"renditions": [{"name": "small", "size": {"mode": "height", "height": 60}}]})
    assert ctx.preflight is not None and ctx.preflight["path"] == "reencode"
    assert "renditions need the decoded frames" in ctx.warnings[0]["message"]
    assert len(ctx.published) == 2


def test_less_than_a_frame_is_a_precise_error(
    smart_root: Path, run_export: Callable[..., tuple[FakeContext, Path]]
) -> None:
    # Found by the fuzzer: the planner crashed on an edit shorter than one output frame.
    job = {**_job([("sred", 0, 30)]), "segments": [{"angle": "sred", "start": 0.5, "end": 0.51}]}
    with pytest.raises(JobError) as caught:
        run_export(job)
    assert caught.value.code == ErrorCode.INVALID_JOB
    assert "less than one frame" in caught.value.message


# --- the pure split ------------------------------------------------------------------------


def _index(gop: int, count: int) -> VideoIndex:
    """x264-like decode order with 3 B-frames in a pyramid: I0 P4 B2 b1 b3 P8 B6 b5 b7 ..."""
    order: list[int] = []
    for start in range(0, count, gop):
        order.append(start)
        rest = list(range(start + 1, min(start + gop, count)))
        while rest:
            group, rest = rest[:4], rest[4:]
            if len(group) == 4:
                order += [group[3], group[1], group[0], group[2]]
            else:
                order += [group[-1], *group[:-1]]
    packets = tuple(
        VideoPacket(pts=d * 512, dts=(i - 2) * 512, duration=512, keyframe=d % gop == 0,
                    idr=d % gop == 0)
        for i, d in enumerate(order)
    )  # fmt: skip
    return VideoIndex(Fraction(1, 15360), Fraction(0), packets)


@pytest.mark.parametrize(
    ("start", "stop", "shape"),
    [
        (0, 27, ["copy", "encode"]),  # stops inside a mini-GOP: 25, 26 are encoded
        (1, 30, ["encode"]),  # no keyframe inside
        (29, 58, ["encode", "copy", "encode"]),  # 29 | 30..54 | 55..57
        (30, 31, ["copy"]),  # the keyframe alone
        (30, 33, ["copy", "encode"]),  # P34 comes before B31..33: only 30 is copied
        (59, 121, ["encode", "copy"]),  # 59 | 60..120, whole GOPs
    ],
)
def test_split_piece_copies_only_what_can_be_copied(
    start: int, stop: int, shape: list[str]
) -> None:
    frames = Frames.of(_index(30, 180))
    assert frames is not None
    parts = split_piece(frames, start, stop, joinable=True)
    assert [p.kind for p in parts] == shape
    # The parts tile [start, stop) exactly, in order.
    assert parts[0].start == start and parts[-1].stop == stop
    assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
    for part in parts:
        if part.kind == "copy":
            assert part.start in frames.heads
    assert [p.kind for p in split_piece(frames, start, stop, joinable=False)] == ["encode"]


def test_variable_frame_rate_is_not_smart() -> None:
    index = _index(30, 60)
    wobbly = VideoIndex(
        index.time_base,
        index.origin,
        (*index.packets[:-1], VideoPacket(59 * 512 + 7, 57 * 512, 512, False)),
    )
    assert Frames.of(index) is not None
    assert Frames.of(wobbly) is None


def test_matroska_angles_are_exact_at_every_cut(
    media_root: Path, ffmpeg: str, run_export: Callable[..., tuple[FakeContext, Path]]
) -> None:
    # Given two angles in Matroska at 25 fps (its millisecond timestamps are exact at this
    # rate: smart render takes it). It stores no decode times (libavformat derives them),
    # so an encoded part's read ends at its span's end, not at the last packet it needs
    for colour in ("red", "green"):
        clip = make_clip(ffmpeg, Clip(colour, fps=25, seconds=4, gop_seconds=1.0), media_root)
        mkv = media_root / f"{colour}25.mkv"
        if not mkv.exists():
            subprocess.run(
                [ffmpeg, "-v", "error", "-i", str(clip), "-c", "copy", str(mkv)], check=True
            )
    # Each angle's parts are one input: the next part's warm-up closes the part before
    edit = [("red", 0, 22), ("green", 22, 47), ("red", 47, 73), ("green", 73, 100)]
    job = {
        "angles": [{"id": c, "source": f"{c}25.mkv"} for c in ("red", "green")],
        "segments": [{"angle": a, "start": b / 25, "end": e / 25} for a, b, e in edit],
        "mode": "smart",
    }
    # When it is rendered smart
    ctx, out = run_export(job)
    # Then every frame is the expected one, decoded without a word
    assert ctx.preflight is not None, ctx.preflight
    assert ctx.preflight["path"] == "smart", ctx.preflight.get("reason")
    expected = [(a, k) for a, b, e in edit for k in range(b, e)]
    assert [(c, n) for c, n, _ in read_frames(out)] == expected
    assert decode_errors(ffmpeg, out) == ""
