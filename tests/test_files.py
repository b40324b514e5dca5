"""File primitives on the real filesystem, and spool layout logic on pyfakefs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spooler.errors import ErrorCode
from spooler.fsutil import (
    FileTooLarge,
    UnsafeFile,
    atomic_write_json,
    open_for_writing_elsewhere,
    read_untrusted,
    remove_temp_files,
)
from spooler.layout import SpoolLayout
from spooler.spool import (
    DuplicateJob,
    claim,
    ensure_layout,
    establish,
    move_aside,
    owner_of,
    scan_inbox,
    take_ownership,
    write_status,
)
from spooler.status import State, new_status

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# -- real filesystem: what only the kernel can show ---------------------------------------------
def test_read_untrusted_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "job.json"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    reader = threading.Thread(target=lambda: _capture(result, read_untrusted, fifo, 100))
    reader.start()
    reader.join(timeout=2)
    assert not reader.is_alive(), "reading a FIFO must not hang"
    assert isinstance(result[0], UnsafeFile)


def _capture(out: list[BaseException], fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except BaseException as exc:
        out.append(exc)


def test_read_untrusted_refuses_symlinks_and_large_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    link = tmp_path / "link.json"
    link.symlink_to(secret)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        read_untrusted(link, 100)
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * 101)
    with pytest.raises(FileTooLarge):
        read_untrusted(big, 100)
    assert read_untrusted(secret, 100) == b"s3cret"
    with pytest.raises(UnsafeFile):
        read_untrusted(tmp_path, 100)


def test_lease_check_sees_a_writer_in_another_process(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("{")
    writer = subprocess.Popen(
        [sys.executable, "-c", f"f = open({str(target)!r}, 'a'); import time; time.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 5
        while open_for_writing_elsewhere(target) is not True and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_for_writing_elsewhere(target) is True
    finally:
        writer.kill()
        writer.wait()
    assert open_for_writing_elsewhere(target) is False


def test_atomic_write_leaves_no_temp_and_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    with pytest.raises(ValueError):
        atomic_write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_status_written_over_a_folder_sets_the_folder_aside(tmp_path: Path) -> None:
    # Given a job folder whose status.json a client replaced by a folder
    layout = SpoolLayout(tmp_path)
    ensure_layout(layout)
    layout.job_dir("j").mkdir()
    (layout.status_file("j") / "theirs").mkdir(parents=True)
    status = new_status("j", State.QUEUED, now=NOW, submitted_at=NOW, worker=None, max_attempts=1)
    # When the daemon writes the job's status
    write_status(layout, status)
    # Then status.json is the status, and the folder waits under a temporary name
    assert json.loads(layout.status_file("j").read_text())["state"] == "queued"
    (aside,) = [p for p in layout.job_dir("j").iterdir() if p.name != "status.json"]
    assert aside.name.startswith(".tmp-") and (aside / "theirs").is_dir()


def test_concurrent_claims_have_exactly_one_winner(tmp_path: Path) -> None:
    layout = SpoolLayout(tmp_path)
    ensure_layout(layout)
    layout.inbox_job("race").write_text("{}")
    barrier = threading.Barrier(8)
    wins: list[Path | None] = []

    def contender(n: int) -> None:
        barrier.wait()
        wins.append(claim(layout, "race", f"w{n}"))

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in wins) == 1


# -- pyfakefs: layout logic only ----------------------------------------------------------------
@pytest.fixture
def layout(fs) -> SpoolLayout:  # type: ignore[no-untyped-def]
    spool = SpoolLayout(Path("/spool"))
    ensure_layout(spool)
    return spool


def test_scan_ignores_writer_temporaries(layout: SpoolLayout) -> None:
    for name in ("a.json", ".b.json.tmp", "c.json.part", ".rsync.XyZ", "d.cancel", "e.txt"):
        (layout.inbox / name).write_text("{}")
    found = {f.entry.name: f.entry.kind.value for f in scan_inbox(layout)}
    assert found == {"a.json": "job", "d.cancel": "cancel", "e.txt": "stray"}


def test_move_aside_never_overwrites(layout: SpoolLayout) -> None:
    for content in ("first", "second"):
        path = layout.inbox / "bad name.json"
        path.write_text(content)
        move_aside(layout, path, ErrorCode.INVALID_ID, "bad", NOW)
    kept = sorted(
        p.read_text() for p in layout.rejected.iterdir() if not p.name.endswith(".error.json")
    )
    assert kept == ["first", "second"]
    errors = [json.loads(p.read_text()) for p in layout.rejected.glob("*.error.json")]
    assert {e["code"] for e in errors} == {"invalid_id"} and len(errors) == 2


def _status(job_id: str):  # type: ignore[no-untyped-def]
    return new_status(job_id, State.QUEUED, now=NOW, submitted_at=NOW, worker=None, max_attempts=1)


def test_establish_creates_the_job_folder_and_detects_duplicates(layout: SpoolLayout) -> None:
    layout.inbox_job("j1").write_text('{"v": 1}')
    claim_file = claim(layout, "j1", "w1")
    assert claim_file is not None
    establish(layout, "j1", claim_file, "w1", _status("j1"))
    assert json.loads(layout.job_file("j1").read_text()) == {"v": 1}
    assert json.loads(layout.status_file("j1").read_text())["state"] == "queued"
    assert owner_of(layout, "j1") == "w1"
    assert list(layout.claims.iterdir()) == []
    # The same id again: refused, and the second file is left for the caller to move aside.
    layout.inbox_job("j1").write_text('{"v": 2}')
    second = claim(layout, "j1", "w2")
    assert second is not None
    with pytest.raises(DuplicateJob):
        establish(layout, "j1", second, "w2", _status("j1"))
    assert second.read_text() == '{"v": 2}'
    assert json.loads(layout.job_file("j1").read_text()) == {"v": 1}
    assert [p.name for p in layout.jobs.iterdir()] == ["j1"]  # no staging folder left


def test_takeover_is_a_single_rename(layout: SpoolLayout) -> None:
    layout.inbox_job("j2").write_text("{}")
    claim_file = claim(layout, "j2", "dead")
    assert claim_file is not None
    establish(layout, "j2", claim_file, "dead", _status("j2"))
    assert take_ownership(layout, "j2", "dead", "w-a")
    assert not take_ownership(layout, "j2", "dead", "w-b")  # the loser finds nothing to rename
    assert owner_of(layout, "j2") == "w-a"


def test_remove_temp_files_keeps_final_files(layout: SpoolLayout) -> None:
    job = layout.job_dir("j3")
    job.mkdir()
    for name in ("out.mp4", ".tmp-abc-out.mp4", "status.json"):
        (job / name).write_text("x")
    (job / ".tmp-work").mkdir()
    removed = sorted(p.name for p in remove_temp_files(job))
    assert removed == [".tmp-abc-out.mp4", ".tmp-work"]
    assert sorted(p.name for p in job.iterdir()) == ["out.mp4", "status.json"]
