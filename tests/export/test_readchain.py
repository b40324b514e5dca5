"""The reads' video chains (issue 18): exact trims where source frames map one to one onto
output frames, fps elsewhere; each read's frames routed to its own branch only."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from export_support import FakeContext, decode_errors
from mediagen import Clip, make_clip, read_frames
from test_export_ffmpeg import ANGLES, FAST, assert_av_sync, expected_frames, seg

from spooler.export.ffconcat import ConcatList
from spooler.export.graph import route
from spooler.export.readchain import exact_window
from spooler.mediainfo import VideoIndex, VideoPacket

Run = Callable[..., tuple[FakeContext, Path]]
FPS = Fraction(30)


def index_of(times: list[Fraction], time_base: Fraction = Fraction(1, 15360)) -> VideoIndex:
    packets = tuple(
        VideoPacket(pts=int(t / time_base), dts=int(t / time_base), duration=0, keyframe=False)
        for t in times
    )
    return VideoIndex(time_base=time_base, origin=Fraction(0), packets=packets)


def window(times: list[Fraction], start: Fraction, frames: int) -> tuple[float, float] | None:
    index = index_of(times)
    found = exact_window(sorted(p.pts for p in index.packets), index, start, frames, FPS)
    return None if found is None else (float(found.start * FPS), float(found.end * FPS))


def test_a_constant_rate_source_at_the_output_rate_is_cut_midway_between_frames() -> None:
    frames = [Fraction(n, 30) for n in range(60)]
    # A read at 10 frames in, 5 frames long: source frames 10..14, bounds half a frame out
    assert window(frames, Fraction(10, 30), 5) == (9.5, 14.5)
    # A quarter frame off the grid: still one source frame per output frame
    shifted = [t + Fraction(1, 120) for t in frames]
    assert window(shifted, Fraction(10, 30), 5) == (9.75, 14.75)
    # The file's first and last frames: the bounds are half a frame beyond them
    assert window(frames, Fraction(0), 3) == (-0.5, 2.5)
    assert window(frames, Fraction(57, 30), 3) == (56.5, 59.5)


def test_reads_that_need_the_fps_filter_get_none() -> None:
    frames = [Fraction(n, 30) for n in range(60)]
    # Half way between two output frames: fps's rounding decides, so fps stays
    assert window([t + Fraction(1, 60) for t in frames], Fraction(10, 30), 5) is None
    # A missing frame (a phone's variable rate): fps holds the previous one
    assert window(frames[:12] + frames[13:], Fraction(10, 30), 5) is None
    # Another rate: at 25 fps one output frame in six has no source frame of its own ...
    at25 = [Fraction(n, 25) for n in range(50)]
    assert window(at25, Fraction(10, 30), 10) is None
    # ... though a read short enough to miss that frame maps one to one (and fps agrees)
    assert window(at25, Fraction(10, 30), 5) == (9.0 - 1 / 1024, 15.0 - 1 / 1024)
    # 60 fps: two source frames per output frame
    assert window([Fraction(n, 60) for n in range(120)], Fraction(10, 30), 5) is None
    # The source ends a frame early: tpad fills the last output frame
    assert window(frames, Fraction(58, 30), 3) is None


def test_many_short_cuts_of_constant_rate_sources_skip_fps_and_stay_exact(run_export: Run) -> None:
    # Given 36 cuts of 2 or 3 frames, off the frame grid, through three 30 fps angles
    # with sync offsets, audio following the picture
    bounds = [0.2]
    while len(bounds) < 37:
        bounds.append(round(bounds[-1] + (2 + len(bounds) % 2) / 30 + 0.003, 3))
    cuts = [(("cam1", "cam2", "cam3")[i % 3], bounds[i], bounds[i + 1]) for i in range(36)]
    job = {"angles": ANGLES[:3], "segments": seg(*cuts), "mode": "reencode",
           "output": FAST, "audio": {"mode": "follow"}}  # fmt: skip
    # When the export runs
    ctx, out = run_export(job)
    # Then every output frame is the source frame the cut rules give
    assert [(c, n) for c, n, _ in read_frames(out)] == expected_frames(cuts)
    # And no read went through fps: each is a trim of its own frames, routed to it alone
    assert ctx.preflight is not None and ctx.preflight["output"]["exactReads"] == 36
    graph_text = " ".join(ctx.commands[0])
    assert "fps=" not in graph_text and "split=" not in graph_text
    assert "select=" in graph_text and "aselect=" in graph_text
    frames = len(expected_frames(cuts))
    assert_av_sync(out, frames / 30)
    assert decode_errors(ctx.ffmpeg, out) == ""


def test_variable_rate_reads_keep_fps_beside_exact_ones(
    run_export: Run, media_root: Path, ffmpeg: str
) -> None:
    # Given a phone clip whose timestamps wobble by 12 ms and that misses every 7th frame,
    # cut in and out with a constant-rate angle every few frames
    clip = make_clip(ffmpeg, Clip("blue", jitter=0.012, drop_every=7), media_root)
    source = [(n, t) for _, n, t in read_frames(clip)]
    link = media_root / "vfr_cuts.mp4"
    if not link.exists():
        link.symlink_to(clip.name)
    angles = [{"id": "cam1", "source": "red.mp4"},
              {"id": "phone", "source": "vfr_cuts.mp4", "syncOffset": 0.5}]  # fmt: skip
    bounds = [0.0, 0.21, 0.5, 0.77, 1.1, 1.36, 1.62, 2.0, 2.3, 2.61, 3.0]
    cuts = [(("cam1", "phone")[i % 2], bounds[i], bounds[i + 1]) for i in range(10)]
    job = {"angles": angles, "segments": seg(*cuts), "mode": "reencode",
           "output": {**FAST, "fps": 30}}  # fmt: skip
    # When the export runs
    ctx, out = run_export(job)
    # Then the cam1 frames are its own source frames, and phone frame k is the last source
    # frame whose time, rounded to the output grid, is not after it (the fps filter's rule)
    slots = [(round((t - 0.5) * 30), n) for n, t in source]
    expected: list[tuple[str, int]] = []
    for angle, start, end in cuts:
        for k in range(round(start * 30), round(end * 30)):
            if angle == "cam1":
                expected.append(("red", k))
            else:
                expected.append(("blue", max(n for slot, n in slots if slot <= k)))
    assert [(c, n) for c, n, _ in read_frames(out)] == expected
    # And only the cam1 reads skipped fps
    assert ctx.preflight is not None and ctx.preflight["output"]["exactReads"] == 5
    assert "fps=fps=30/1" in " ".join(ctx.commands[0])


def test_the_routing_expression_stays_parseable_past_a_hundred_pieces(ffmpeg: str) -> None:
    # Given an angle list of 150 entries (ffmpeg's expression parser refuses a flat sum of
    # 100 terms or more)
    listing = ConcatList(Path("/m/a.mp4"), Fraction(0), Fraction(1))
    for _ in range(150):
        listing.add(Fraction(0), Fraction(1, 5))
    expression = route("select", listing, 150)
    assert expression.startswith("select='(") and expression.endswith("':n=150")
    # When ffmpeg routes 10 frames a second through it, one output per entry
    pads = "".join(f"[o{k}]" for k in range(150))
    graph = f"{expression}{pads};{pads}concat=n=150"
    result = subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=s=32x24:r=10:d=180", "-filter_complex", graph, "-f", "framemd5", "-"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    # Then every frame comes out, each through one branch
    assert result.returncode == 0, result.stderr
    assert sum(line.startswith("0,") for line in result.stdout.splitlines()) == 1800
