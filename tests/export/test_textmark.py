"""The text watermark: its plan (the job's text only in a temp file, the operator's font,
no expansion) and, with real ffmpeg, its pixels only in its corner and time range."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from export_support import FakeContext
from test_plan import PATHS, SOURCES
from test_plan import job as plan_job
from test_watermark import job, planes

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export.plan import plan_export
from spooler.export.textmark import escape, text_path
from spooler.fonts import choose_font, resolve_font

Run = Callable[..., tuple[FakeContext, Path]]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
HOSTILE = "it's 50%: %{pts} \\ [x];, é 東"
needs_font = pytest.mark.skipif(not DEJAVU.is_file(), reason="needs fonts-dejavu-core")


def graph_of(args: list[str]) -> str:
    return args[args.index("-filter_complex") + 1]


def test_plan_reads_the_text_from_a_file_with_the_operators_font() -> None:
    font = "/fonts/it's: [odd], dir;\\/F.ttf"
    settings = Settings(media_roots=[Path("/media")], export={"watermark_font": font})
    mark = {"text": HOSTILE, "position": "top-left", "textSize": 0.05, "start": 1, "end": 2}
    plan = plan_export(plan_job([("cam1", 0, 3)], watermark=mark), SOURCES, settings, PATHS)
    (command,) = plan.commands
    graph = graph_of(command.args)
    # The text is in the file the kind writes before ffmpeg runs, and nowhere in the command
    assert command.files[text_path(PATHS)] == HOSTILE
    assert not any("pts}" in arg or "東" in arg for arg in command.args)
    assert (
        f"drawtext=fontfile={escape(font)}:textfile={PATHS.graph}.text:expansion=none:"
        "fontsize=54:fontcolor=white@1.000000:x=38:y=38:enable='between(n,30,59)'"
    ) in graph
    assert escape(font) == "/fonts/it\\\\\\'s\\\\: \\[odd\\]\\, dir\\;\\\\\\\\/F.ttf"
    assert plan.preflight["output"]["watermark"] == {
        "text": {"font": font, "fontSize": 54},
        "frames": [30, 60],
    }


def test_plan_colours_and_positions() -> None:
    settings = Settings(media_roots=[Path("/media")], export={"watermark_font": "/f.ttf"})

    def drawn(**mark: Any) -> str:
        spec = plan_job([("cam1", 0, 3)], watermark={"text": "Hi", **mark})
        graph = graph_of(plan_export(spec, SOURCES, settings, PATHS).commands[0].args)
        return graph[graph.index("drawtext") : graph.index(",format=yuv420p[vout]")]

    assert ":fontcolor=0xA0B1C2@0.250000:x=w-text_w-38:y=h-text_h-38" in drawn(
        color="#a0b1c2", opacity=0.25
    )
    assert ":fontsize=108:fontcolor=black@1.000000:x=(w-text_w)/2:y=(h-text_h)/2" in drawn(
        position="center", color="black", textSize=0.1, margin=0
    )
    assert "enable" not in drawn()  # the whole export: no timeline option


def test_plan_without_a_font_fails_precisely() -> None:
    # "auto" reaches the planner only when the kind found no font
    spec = plan_job([("cam1", 0, 3)], watermark={"text": "Hi"})
    with pytest.raises(JobError) as info:
        plan_export(spec, SOURCES, Settings(media_roots=[Path("/media")]), PATHS)
    assert info.value.code is ErrorCode.UNSUPPORTED_MEDIA
    assert "text watermarks are unavailable on this worker: no font file was found" in (
        info.value.message
    )
    assert "fonts-dejavu-core" in info.value.message


def test_auto_font_prefers_dejavu_sans(tmp_path: Path) -> None:
    fonts = ["/a/Zzz.pfb", "/a/Other.otf", "/b/DejaVuSans.ttf", "/b/DejaVuSans-Bold.ttf"]
    assert choose_font(fonts) == "/b/DejaVuSans.ttf"
    assert choose_font(["/a/x.pfb", "/a/y.ttc", "/a/Other.otf"]) == "/a/Other.otf"
    assert choose_font(["/a/x.pfb"]) is None
    assert resolve_font(str(tmp_path / "missing.ttf")) is None
    assert resolve_font(str(tmp_path)) is None  # a folder is not a font


@needs_font
def test_text_pixels_are_in_their_corner_and_time_range_only(run_export: Run) -> None:
    # Given hostile text (quotes, colons, backslash, %{pts}) at 15% of the 120 px height,
    # 8 px (0.05 x 160) from the bottom-right corner, from 0.5 s to 1.2 s (lossless export)
    mark = {"text": HOSTILE[:12], "textSize": 0.15, "margin": 0.05, "start": 0.5, "end": 1.2}
    ctx, marked = run_export(job(watermark=mark), export={"watermark_font": str(DEJAVU)})
    _, plain = run_export(job())
    assert ctx.preflight["output"]["watermark"]["frames"] == [15, 36]  # type: ignore[index]
    with_text, without = planes(marked), planes(plain)
    assert len(with_text) == len(without) == 90
    width, height = 160, 120
    changed_frames = []
    for n, (ours, theirs) in enumerate(zip(with_text, without, strict=True)):
        if ours == theirs:
            continue
        changed_frames.append(n)
        y, y0 = ours[0], theirs[0]
        stride = len(y) // height
        rows, cols = set(), set()
        for row in range(height):
            for col in range(width):
                if y[row * stride + col] != y0[row * stride + col]:
                    rows.add(row)
                    cols.add(col)
        # Then the text lies against the margin, within a box of about one font size
        # (bottom edge 120 - 8 = 112, right edge 160 - 8 = 152, 18 px font)
        assert 106 <= max(rows) < 112 and min(rows) >= 112 - 18 - 8, n
        assert 148 <= max(cols) < 152 and min(cols) >= 8, n
    # And only in its time range
    assert changed_frames == list(range(15, 36))
    # %{pts} is drawn literally: the text is the same on every frame (one background colour)
    assert with_text[16][0][60 * 160 :] == with_text[30][0][60 * 160 :]
    assert without[16][0][60 * 160 :] == without[30][0][60 * 160 :]


@needs_font
def test_long_hostile_text_and_an_odd_font_path_render(run_export: Run, tmp_path: Path) -> None:
    # Given the font at a path full of filter graph syntax, and 200 characters of hostile text
    odd = tmp_path / "it's: [odd], dir;\\x" / "F.ttf"
    odd.parent.mkdir()
    shutil.copy(DEJAVU, odd)
    text = (HOSTILE + " %{localtime} %{eif:1/0:d} '\"\\:") * 5
    ctx, out = run_export(
        job(watermark={"text": text[:200], "textSize": 0.1, "position": "center"}),
        export={"watermark_font": str(odd)},
    )
    # Then the export succeeds and the text was written to its file, not into the graph
    assert ctx.preflight["output"]["watermark"]["text"]["font"] == str(odd)  # type: ignore[index]
    assert out.stat().st_size > 0
    assert not any(text[:200] in str(entry) for entry in ctx.commands)
    # (the job log shows the file as written, and the file is gone once the job succeeded)
    assert f".graph.txt.text (200 characters):\n{text[:200]}" in ctx.log.getvalue()
    assert not list(out.parent.glob("*.text"))


def test_no_font_fails_before_ffmpeg_runs(run_export: Run, tmp_path: Path) -> None:
    with pytest.raises(JobError) as info:
        run_export(
            job(watermark={"text": "Hi"}),
            export={"watermark_font": str(tmp_path / "none.ttf")},
        )
    assert info.value.code is ErrorCode.UNSUPPORTED_MEDIA
    assert f"export.watermark_font '{tmp_path / 'none.ttf'}' is not a readable file" in (
        info.value.message
    )
