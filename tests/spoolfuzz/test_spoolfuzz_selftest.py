"""The fuzzer must not be blind. The canary sees reads through symlinks and paths, writes
through hard links, moves and deletions, and stays quiet for reads of a hard link made
through the spool's own name; the in-process harness reports a loop turn that blocks on a
FIFO (and unblocks it), a read outside the spool and a failed loop phase, given a daemon
planted with exactly those defects."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from canary import Canary
from inprocess_harness import run_state_in_process
from spool_states import HUGE, Entry, SpoolState, materialize, state_from_json, state_to_json

from spooler.clock import Clocks
from spooler.daemon import Daemon


def _signatures(canary: Canary) -> set[str]:
    return {t.signature for t in canary.drain()}


def test_canary_sees_reads_writes_moves_and_deletions(tmp_path: Path) -> None:
    # Given a watched canary and a spool folder beside it
    canary = Canary(tmp_path / "canary")
    canary.build()
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "link").symlink_to(canary.path("tree/secret.txt"))
    os.link(canary.path("linked/log.txt"), spool / "hard")
    canary.start()
    try:
        assert _signatures(canary) == set()
        # When a file is read through a symlink in the spool, then through a ../ path
        (spool / "link").read_bytes()
        seen = _signatures(canary)
        assert {"canary:IN_OPEN:tree/secret.txt", "canary:IN_ACCESS:tree/secret.txt"} <= seen
        (spool / ".." / "canary" / "tree" / "precious.txt").read_bytes()
        assert "canary:IN_OPEN:tree/precious.txt" in _signatures(canary)
        # Reading a hard link through its spool name is reading the spool: not reported
        (spool / "hard").read_bytes()
        assert _signatures(canary) == set()
        # Listing a canary folder is an open of it
        os.listdir(canary.path("tree/dir"))
        assert "canary:IN_OPEN:tree/dir" in _signatures(canary)
        # Writing through the hard link is a write outside the spool
        with (spool / "hard").open("ab") as fh:
            fh.write(b"more\n")
        assert "canary:IN_MODIFY:linked/log.txt" in _signatures(canary)
        # Moving and deleting
        canary.path("tree/secret.txt").rename(spool / "loot")
        assert "canary:IN_MOVED_FROM:tree/secret.txt" in _signatures(canary)
        canary.path("tree/precious.txt").unlink()
        assert "canary:IN_DELETE:tree/precious.txt" in _signatures(canary)
    finally:
        canary.stop()
    changed = {t.signature for t in canary.changed_files()}
    assert changed == {
        "canary:CONTENT_CHANGED:tree/secret.txt",
        "canary:CONTENT_CHANGED:tree/precious.txt",
        "canary:CONTENT_CHANGED:linked/log.txt",
    }


def test_in_process_harness_reports_a_planted_wedge_read_and_phase_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a daemon whose recovery pass reads a FIFO status, then a canary file, then fails
    def planted(self: Daemon, clocks: Clocks) -> None:
        fifo = self.layout.job_dir("j1") / "status.json"
        fifo.read_bytes()  # blocks until the harness opens the FIFO for writing
        (self.layout.root.parent / "canary" / "tree" / "secret.txt").read_bytes()
        raise ValueError("planted")

    monkeypatch.setattr(Daemon, "_recover", planted)
    state = SpoolState(
        (Entry((b"jobs", b"j1"), "dir"), Entry((b"jobs", b"j1", b"status.json"), "fifo"))
    )
    # When the harness runs it
    outcome = run_state_in_process(state, tmp_path / "w", good_timeout=2.0, step_timeout=1.0)
    # Then each planted defect has its signature
    assert "heartbeat_stale" in outcome.signatures
    assert "canary:IN_OPEN:tree/secret.txt" in outcome.signatures
    assert "log:loop_phase_failed:planted:ValueError: planted" in outcome.signatures
    assert any(s.startswith("good_job_not_done") for s in outcome.signatures)


def test_materialize_never_writes_through_a_symlink_and_states_round_trip(
    tmp_path: Path,
) -> None:
    # Given a state whose second and third entries would land in the canary if followed
    canary = Canary(tmp_path / "canary")
    canary.build()
    state = SpoolState(
        (
            Entry((b"jobs", b"j1"), "symlink", target="canary:tree"),
            Entry((b"jobs", b"j1", b"status.json"), "file", data=b"{}"),
            Entry((b"jobs", b"j2"), "symlink", target="canary:tree/secret.txt"),
            Entry((b"jobs", b"j2"), "file", data=b"overwritten"),
            Entry((b"inbox", b"\xff\xfe.json"), "sparse", size=HUGE),
        )
    )
    # When it is written
    skipped = materialize(state.entries, tmp_path / "spool", canary.root)
    # Then both are skipped, the canary is as built, the rest exists
    assert len(skipped) == 2
    assert canary.changed_files() == []
    assert not (canary.root / "tree" / "status.json").read_bytes().startswith(b"{}")
    assert os.lstat(tmp_path / "spool" / "inbox" / os.fsdecode(b"\xff\xfe.json")).st_size == HUGE
    # And a state survives its JSON form byte for byte
    assert state_from_json(json.loads(json.dumps(state_to_json(state)))) == state
