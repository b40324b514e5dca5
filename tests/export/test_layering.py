"""The export package's layers: the job model and the planners load no shell module.

Each import runs in a fresh interpreter (a module loaded by an earlier test would hide a
new dependency), and the test names what was loaded that should not have been.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# Modules that run processes, open media with PyAV, read the disk for sources or fonts,
# or the registry (which loads every kind, and so all of the above).
SHELL = (
    "av",
    "spooler.ffmpeg",
    "spooler.media",
    "spooler.runner",
    "spooler.daemon",
    "spooler.fonts",
    "spooler.kinds",
    "spooler.export.kind",
    "spooler.export.sources",
    "spooler.export.stills",
    "spooler.export.remux",
    "spooler.export.verify",
)


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


@pytest.mark.parametrize(
    "module",
    [
        # The job file (and the package's __init__): what the schema and the loader need.
        "spooler.export.models",
        "spooler.export.plan",  # every planner: reencode, copy, smart, graph, audio
        "spooler.export.thumbnails",
    ],
)
def test_pure_modules_load_no_shell_module(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert module in loaded
    assert sorted(loaded & set(SHELL)) == []


@pytest.mark.parametrize(
    "first, then",
    [("spooler.kinds", "spooler.export.kind"), ("spooler.export.kind", "spooler.kinds")],
)
def test_registry_and_export_kind_import_in_either_order(first: str, then: str) -> None:
    # The registry imports the export kind; the export kind never imports the registry.
    code = (
        f"import {first}, {then}\n"
        "from spooler.kinds import KINDS\n"
        "from spooler.export import ExportKind\n"
        "assert isinstance(KINDS['export'], ExportKind), KINDS\n"
        "assert sorted(KINDS) == ['export', 'testpattern'], KINDS"
    )
    assert {"spooler.kinds", "spooler.export.kind"} <= loaded_after(code)


def test_the_export_kind_does_not_load_the_registry() -> None:
    assert "spooler.kinds" not in loaded_after("import spooler.export.kind")
