"""Source confinement: only regular files inside the media roots, symlinks resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from spooler.errors import ErrorCode, JobError
from spooler.export.sources import resolve_source


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    first, second, outside = tmp_path / "a", tmp_path / "b", tmp_path / "outside"
    for folder in (first / "day1", second, outside):
        folder.mkdir(parents=True)
    (first / "day1" / "cam1.mp4").write_bytes(b"x")
    (second / "cam2.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"x")
    (first / "escape.mp4").symlink_to(outside / "secret.mp4")
    (first / "inside.mp4").symlink_to(first / "day1" / "cam1.mp4")
    (first / "folder.mp4").mkdir()
    return [first, second]


def test_resolves_in_the_first_root_that_has_it(roots: list[Path]) -> None:
    assert resolve_source("day1/cam1.mp4", roots) == (roots[0] / "day1" / "cam1.mp4").resolve()
    assert resolve_source("cam2.mp4", roots) == (roots[1] / "cam2.mp4").resolve()
    assert resolve_source("inside.mp4", roots) == (roots[0] / "day1" / "cam1.mp4").resolve()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("escape.mp4", ErrorCode.SOURCE_NOT_ALLOWED),  # a symlink out of the roots
        ("folder.mp4", ErrorCode.SOURCE_NOT_ALLOWED),
        ("../outside/secret.mp4", ErrorCode.SOURCE_NOT_ALLOWED),
        ("/etc/hostname", ErrorCode.SOURCE_NOT_ALLOWED),
        ("-y.mp4", ErrorCode.SOURCE_NOT_ALLOWED),
        ("concat:cam2.mp4|cam2.mp4", ErrorCode.SOURCE_NOT_ALLOWED),
        ("file:cam2.mp4", ErrorCode.SOURCE_NOT_ALLOWED),
        ("https://example.com/a.mp4", ErrorCode.SOURCE_NOT_ALLOWED),
        ("missing.mp4", ErrorCode.SOURCE_MISSING),
    ],
)
def test_refuses(roots: list[Path], name: str, code: ErrorCode) -> None:
    with pytest.raises(JobError) as info:
        resolve_source(name, roots)
    assert info.value.code is code
    assert info.value.details["source"] == name
