"""The watermark with real ffmpeg: its pixels are where they should be and nowhere else, only
inside its time range; its image is a source like any other (media roots, PNG only)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from export_support import FakeContext

from spooler.errors import ErrorCode, JobError
from spooler.export.models import Watermark
from spooler.export.watermark import Placement, place

Run = Callable[..., tuple[FakeContext, Path]]
LOSSLESS = {"preset": "ultrafast", "crf": 0}
# 40x20: the left half opaque white, the right half fully transparent.
LOGO = "logo.png"


@pytest.fixture(scope="module")
def logo(media_root: Path, ffmpeg: str) -> Path:
    path = media_root / LOGO
    if not path.exists():
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
             "color=c=white:s=40x20,format=rgba,geq=r=255:g=255:b=255:a='if(lt(X,20),255,0)'",
             "-frames:v", "1", str(path)],
            check=True,
        )  # fmt: skip
    return path


def planes(path: Path) -> list[tuple[bytes, ...]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [tuple(bytes(p) for p in f.planes) for f in container.decode(stream)]


def job(**extra: Any) -> dict[str, Any]:
    return {
        "angles": [{"id": "cam1", "source": "red.mp4"}, {"id": "cam2", "source": "green.mp4"}],
        "segments": [
            {"angle": "cam1", "start": 0, "end": 1.5},
            {"angle": "cam2", "start": 1.5, "end": 3},
        ],
        "mode": "reencode",
        "output": LOSSLESS,
        **extra,
    }


def test_watermark_pixels_are_in_their_box_and_time_range_only(run_export: Run, logo: Path) -> None:
    # Given a 40x20 logo at a quarter of the 160 px width, 8 px (0.05) from the bottom-left
    # corner, half opaque, from 1.0 s to 2.0 s; and the same export without it (lossless)
    mark = {"image": LOGO, "position": "bottom-left", "margin": 0.05, "scale": 0.25,
            "opacity": 0.5, "start": 1.0, "end": 2.0}  # fmt: skip
    ctx, marked = run_export(job(watermark=mark))
    _, plain = run_export(job())
    box = ctx.preflight["output"]["watermark"]  # type: ignore[index]
    assert box == {"box": [8, 92, 40, 20], "frames": [30, 60]}
    with_mark, without = planes(marked), planes(plain)
    assert len(with_mark) == len(without) == 90
    width, height = 160, 120
    for n, (ours, theirs) in enumerate(zip(with_mark, without, strict=True)):
        if not 30 <= n < 60:
            # Then outside its time range, every plane is untouched, bit for bit
            assert ours == theirs, n
            continue
        y, y0 = ours[0], theirs[0]
        stride = len(y) // height
        for row in range(height):
            for col in range(width):
                at = row * stride + col
                inside = 92 <= row < 112 and 8 <= col < 28  # the opaque half of the box
                if inside:
                    # half of white (235) over the picture's luma
                    assert abs(y[at] - (235 + y0[at]) / 2) <= 2, (n, row, col)
                else:
                    # nowhere else, not even in the transparent half of the box
                    assert y[at] == y0[at], (n, row, col)
        # Chroma: the opaque half moves towards neutral grey, the rest is untouched
        for plane in (1, 2):
            c, c0 = ours[plane], theirs[plane]
            stride = len(c) // (height // 2)
            for row in range(height // 2):
                for col in range(width // 2):
                    at = row * stride + col
                    if 46 <= row < 56 and 4 <= col < 14:
                        assert abs(c[at] - (128 + c0[at]) / 2) <= 2
                    else:
                        assert c[at] == c0[at], (n, plane, row, col)


def test_placement_is_even_and_inside_the_frame() -> None:
    def at(position: str, **extra: Any) -> Placement | None:
        mark = Watermark.model_validate({"image": "x.png", "position": position, **extra})
        return place(mark, (300, 100), (1920, 1080), (0, 300), (0.0, 10.0), Fraction(30))

    # 15% of 1920 = 288 wide, 96 high (3:1), 2% of 1920 = 38.4 -> 38 px margins
    assert at("bottom-right") == Placement(1594, 946, 288, 96, 0, 300)
    assert at("top-left") == Placement(38, 38, 288, 96, 0, 300)
    assert at("center") == Placement(816, 492, 288, 96, 0, 300)
    # A time range maps to frames; a margin larger than the room keeps the box in the frame
    assert at("top-right", margin=0.5, start=1.0, end=2.5) == Placement(672, 960, 288, 96, 30, 75)
    mark = Watermark.model_validate({"image": "x.png", "position": "bottom-left", "margin": 0.5})
    assert place(mark, (300, 100), (1920, 800), (0, 30), (0.0, 1.0), Fraction(30)) == (
        Placement(960, 0, 288, 96, 0, 30)
    )
    # A tall image on a wide frame is fitted to the height
    mark = Watermark.model_validate({"image": "x.png", "scale": 1})
    assert place(mark, (100, 1000), (1920, 1080), (0, 30), (0.0, 1.0), Fraction(30)) == (
        Placement(1774, 0, 108, 1080, 0, 30)
    )


def test_auto_reencodes_for_a_watermark(run_export: Run, logo: Path) -> None:
    exact = {
        "angles": [{"id": "cam1", "source": "red.mp4"}],
        "segments": [{"angle": "cam1", "start": 0, "end": 2}],
        "watermark": {"image": LOGO},
        "output": {"preset": "ultrafast"},
    }
    ctx, _ = run_export(exact)
    assert ctx.preflight is not None and ctx.preflight["path"] == "reencode"
    assert "a watermark needs re-encoding" in ctx.preflight["reason"]


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        ("missing", ErrorCode.SOURCE_MISSING, "was not found"),
        ("video", ErrorCode.SOURCE_UNREADABLE, "not a PNG image"),
        ("truncated", ErrorCode.SOURCE_UNREADABLE, "does not decode"),
        ("directory", ErrorCode.SOURCE_NOT_ALLOWED, "not a regular file"),
    ],
)
def test_a_watermark_that_is_not_a_png_is_refused(
    run_export: Run, media_root: Path, logo: Path, make: str, code: ErrorCode, words: str
) -> None:
    name = f"bad-{make}.png"
    path = media_root / name
    if make == "video" and not path.exists():
        path.symlink_to("red.mp4")
    elif make == "truncated":
        path.write_bytes(logo.read_bytes()[:30])
    elif make == "directory":
        path.mkdir(exist_ok=True)
    with pytest.raises(JobError) as info:
        run_export(job(watermark={"image": name}))
    assert info.value.code is code
    assert words in info.value.message
