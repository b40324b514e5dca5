"""The export package's layers: the job model and the planners load no shell module.

Imports run in a fresh interpreter (a module loaded by an earlier test would hide a new
dependency), and the tests name what was loaded that should not have been. The table of
pure and shell modules is in docs/architecture.md ("The export package").
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"

# Modules that run processes, read media with PyAV, or open sources or fonts; and the
# registry, which loads every kind and so all of them.
SHELL = {"av", "spooler.ffmpeg", "spooler.media", "spooler.fonts", "spooler.runner"}
SHELL |= {"spooler.daemon", "spooler.kinds"}


def loaded_after(code: str) -> set[str]:
    """Names in sys.modules after running `code` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return set(out.split())


def documented() -> dict[str, str]:
    """`module.py` -> "pure" or "shell", from the table in the doc."""
    rows = re.findall(r"^\| `(\w+)\.py` \| (pure|shell) \|", DOC.read_text(), re.MULTILINE)
    return dict(rows)


def test_the_job_model_loads_no_ffmpeg_or_pyav_module() -> None:
    loaded = loaded_after("import spooler.export.models")
    assert "spooler.export.models" in loaded
    assert sorted(loaded & SHELL) == []
    pure = {f"spooler.export.{name}" for name, kind in documented().items() if kind == "pure"}
    assert sorted(m for m in loaded if m.startswith("spooler.export.") and m not in pure) == []


def test_every_module_is_documented_and_the_pure_ones_load_no_shell_module() -> None:
    table = documented()
    modules = {p.stem for p in (ROOT / "spooler" / "export").glob("*.py")} - {"__init__"}
    assert sorted(modules ^ set(table)) == []
    pure = sorted(name for name, kind in table.items() if kind == "pure")
    shell = {f"spooler.export.{name}" for name, kind in table.items() if kind == "shell"}
    loaded = loaded_after("\n".join(f"import spooler.export.{name}" for name in pure))
    assert {f"spooler.export.{name}" for name in pure} <= loaded
    assert sorted(loaded & (SHELL | shell)) == []


def test_the_registry_and_the_export_kind_import_in_either_order() -> None:
    # The registry imports the export kind; the export kind never imports the registry.
    check = (
        "from spooler.kinds import KINDS\n"
        "from spooler.export import ExportKind\n"
        "assert isinstance(KINDS['export'], ExportKind), KINDS\n"
        "assert sorted(KINDS) == ['export', 'proxy', 'sync', 'testpattern'], KINDS"
    )
    for first in ("spooler.kinds", "spooler.export.kind"):
        assert "spooler.export.kind" in loaded_after(f"import {first}\n{check}")
    assert "spooler.kinds" not in loaded_after("import spooler.export.kind")
