"""The text watermark: one line of the job's text drawn with the operator's font.

The text is untrusted, so it never enters the filter graph: the plan writes it to a
temporary file (listed in Command.files, written by the kind before ffmpeg runs) and
drawtext reads it with `textfile=`, `expansion=none` (no `%{...}` expansion: the text is
drawn literally). The font is config `export.watermark_font`, resolved by the kind
(kind.with_font, through fonts.py: planning stays pure); both paths are escaped for the
filter graph (option level, then graph level).

Placement: font size = textSize x output height (pixels); margin = margin x output width
from the chosen edges, like the image; the text's own width and height (drawtext's
text_w/text_h) place it in a corner or the centre. A text wider than the frame is
clipped at the frame's edge. Opacity is the colour's alpha; start/end as for the image.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from spooler.config import FONT_AUTO, FONT_INSTALL_HINT
from spooler.errors import ErrorCode, JobError
from spooler.export.commands import PlanPaths
from spooler.export.models import ExportJob, Watermark
from spooler.export.watermark import enable_option, even_pixels, mark_frames, timeline_of

TEXT_SUFFIX = ".text"
COLORS = {"white": "white", "black": "black"}


def no_font(setting: str) -> JobError:
    """The permanent error of a text watermark on a machine without its font."""
    why = (
        "no font file was found"
        if setting == FONT_AUTO
        else f"export.watermark_font {setting!r} is not a readable file"
    )
    return JobError(
        ErrorCode.UNSUPPORTED_MEDIA,
        f"text watermarks are unavailable on this worker: {why} "
        f"(the operator can install fonts: {FONT_INSTALL_HINT}; see spooler doctor)",
        {"watermark": "text", "watermarkFont": setting},
    )


def text_path(paths: PlanPaths) -> Path:
    """Where the job's text goes: next to the graph script (removed with it)."""
    return paths.graph.with_name(paths.graph.name + TEXT_SUFFIX)


def escape(value: str) -> str:
    """A filter option value as the filter graph parser reads it back unchanged: escaped
    for the option list (\\ ' :), then for the graph (\\ ' [ ] , ;)."""
    option = "".join("\\" + c if c in "\\':" else c for c in value)
    return "".join("\\" + c if c in "\\'[],;" else c for c in option)


def _color(mark: Watermark) -> str:
    base = COLORS.get(mark.color) or "0x" + mark.color.removeprefix("#").upper()
    return f"{base}@{mark.opacity:.6f}"


def font_pixels(mark: Watermark, height: int) -> int:
    return max(2, round(Fraction(mark.text_size) * height))


def drawtext(mark: Watermark, font: str, textfile: Path, size: tuple[int, int]) -> str:
    """The drawtext filter (no enable option) for a frame of `size`."""
    width, height = size
    font_size = font_pixels(mark, height)
    m = even_pixels(Fraction(mark.margin) * width)
    x = {"left": f"{m}", "right": f"w-text_w-{m}", "center": "(w-text_w)/2"}
    y = {"top": f"{m}", "bottom": f"h-text_h-{m}", "center": "(h-text_h)/2"}
    horizontal, vertical = {
        "top-left": ("left", "top"),
        "top-right": ("right", "top"),
        "bottom-left": ("left", "bottom"),
        "bottom-right": ("right", "bottom"),
        "center": ("center", "center"),
    }[mark.position]
    return ":".join(
        [
            f"drawtext=fontfile={escape(font)}",
            f"textfile={escape(str(textfile))}",
            "expansion=none",
            f"fontsize={font_size}",
            f"fontcolor={_color(mark)}",
            f"x={x[horizontal]}",
            f"y={y[vertical]}",
        ]
    )


def text_chain(
    job: ExportJob,
    font: str,
    paths: PlanPaths,
    size: tuple[int, int],
    output_frames: tuple[int, int],
    fps: Fraction,
) -> tuple[str, dict[Path, str], dict[str, object]] | None:
    """The filter to add after the retimed picture, the file it reads, and its preflight
    entry; None when the text's time range misses the output."""
    mark = job.watermark
    assert mark is not None and mark.text is not None
    if font == FONT_AUTO:  # the kind resolves "auto"; unresolved means no font was found
        raise no_font(font)
    total = output_frames[1]
    shown = mark_frames(mark, output_frames, timeline_of(job), fps)
    if shown is None:
        return None
    textfile = text_path(paths)
    chain = drawtext(mark, font, textfile, size) + enable_option(*shown, total)
    preflight: dict[str, object] = {
        "text": {"font": font, "fontSize": font_pixels(mark, size[1])},
        "frames": list(shown),
    }
    return chain, {textfile: mark.text}, preflight
