"""Font files for text watermarks: where they are, and which one `watermark_font` means.

The font is the operator's choice (config `export.watermark_font`), never the job's. "auto"
takes DejaVuSans.ttf if it is installed (fonts-dejavu-core), else the first TrueType or
OpenType file in the usual folders. `spooler doctor` reports the same choice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from spooler.config import FONT_AUTO, FONT_INSTALL_HINT

FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
)
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".pfb")
PREFERRED_FONT = "DejaVuSans.ttf"
AUTO = FONT_AUTO  # the setting's value that lets this module choose
INSTALL_HINT = FONT_INSTALL_HINT


def find_fonts(font_dirs: Sequence[Path] = FONT_DIRS) -> list[str]:
    """Font files known to fontconfig (`fc-list`), else found in the usual folders."""
    fc_list = shutil.which("fc-list")
    if fc_list:
        try:
            result = subprocess.run(
                [fc_list, "--format", "%{file}\n"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            fonts = sorted({line for line in result.stdout.splitlines() if line.strip()})
            if fonts:
                return fonts
        except (OSError, subprocess.SubprocessError):
            pass
    found: list[str] = []
    for directory in font_dirs:
        if directory.is_dir():
            found.extend(
                str(p) for p in sorted(directory.rglob("*")) if p.suffix.lower() in FONT_SUFFIXES
            )
    return found


def choose_font(fonts: Sequence[str]) -> str | None:
    """ "auto": DejaVuSans.ttf, else the first .ttf/.otf (drawtext renders both)."""
    for font in fonts:
        if Path(font).name == PREFERRED_FONT:
            return font
    return next((f for f in fonts if Path(f).suffix.lower() in (".ttf", ".otf")), None)


@lru_cache(maxsize=1)
def _auto_font() -> str | None:
    return choose_font(find_fonts())


def resolve_font(setting: str) -> str | None:
    """The font file `watermark_font` names, if it is a readable file (None otherwise).

    "auto" is looked up once per process: fonts installed later need a restart (doctor
    shows the current choice)."""
    font = _auto_font() if setting == AUTO else setting
    if font is None or not Path(font).is_file() or not os.access(font, os.R_OK):
        return None
    return font
