"""Hostile job files and inbox names against one real daemon: each gets a precise code,
the original is preserved byte for byte, and the daemon serves the next job."""

from __future__ import annotations

import json
import time

from support import Spool, tiny_job

MB = 1_048_576

BAD_JOBS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "invalid_json"),
    "not-utf8": (b'{"kind": "testpattern", "metadata": {"x": "\xff\xfe"}}', "not_utf8"),
    "huge": (b'{"kind": "testpattern", "metadata": {"x": "' + b"a" * MB + b'"}}', "too_large"),
    "deep": (
        b'{"kind": "testpattern", "metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        "invalid_json",
    ),
    "nan": (b'{"kind": "testpattern", "durationSeconds": NaN}', "invalid_json"),
    "infinite": (b'{"kind": "testpattern", "durationSeconds": 1e999}', "invalid_json"),
    "dup-keys": (b'{"kind": "testpattern", "width": 32, "width": 3200}', "invalid_json"),
    "unknown-field": (b'{"kind": "testpattern", "shellCommand": "rm -rf /"}', "invalid_job"),
    "wrong-type": (b'{"kind": "testpattern", "durationSeconds": "5; rm -rf /"}', "invalid_job"),
    "array": (b"[]", "invalid_job"),
    "bool-version": (
        b'{"kind": "testpattern", "schemaVersion": true}',
        "unsupported_schema_version",
    ),
    "future": (b'{"kind": "testpattern", "schemaVersion": 2}', "unsupported_schema_version"),
    "unknown-kind": (b'{"kind": "../../etc/passwd"}', "invalid_job"),
    "nul": (b'{"kind": "testpattern"}\x00garbage', "invalid_json"),
}

HOSTILE_NAMES = [
    "..json",  # dot-names: ignored (writers' temporary names)
    "-rf.json",
    "a\nb.json",
    "a'b\".json",
    "x" * 200 + ".json",
    "job.json.json",
    "..%2f..%2fetc.json",
]


def test_every_bad_job_file_is_rejected_precisely_and_kept(spool: Spool, make_daemon) -> None:
    daemon = make_daemon(SPOOLER_MAX_JOBS="2")
    for job_id, (raw, _code) in BAD_JOBS.items():
        spool.submit(job_id, raw)
    for job_id, (raw, code) in BAD_JOBS.items():
        status = spool.wait_final(job_id)
        assert status["state"] == "rejected", (job_id, status)
        assert status["error"]["code"] == code, (job_id, status["error"])
        assert status["error"]["message"]
        assert spool.layout.job_file(job_id).read_bytes() == raw, job_id
    spool.submit("good-after", tiny_job())
    assert spool.wait_final("good-after")["state"] == "succeeded"
    assert daemon.proc.poll() is None


def test_hostile_names_are_moved_aside_and_never_escape_the_spool(
    spool: Spool, make_daemon
) -> None:
    make_daemon()
    inbox = spool.layout.inbox
    outside_before = sorted(p.name for p in spool.root.parent.iterdir())
    for name in HOSTILE_NAMES:
        (inbox / name).write_text(json.dumps(tiny_job()))
    movable = [n for n in HOSTILE_NAMES if not n.startswith(".")]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        errors = list(spool.layout.rejected.glob("*.error.json"))
        if len(errors) >= len(movable):
            break
        time.sleep(0.05)
    originals = sorted(json.loads(p.read_text())["originalName"] for p in errors)
    assert originals == sorted(movable)
    assert {json.loads(p.read_text())["code"] for p in errors} == {"invalid_id"}
    # Moved names are made safe, and everything stays inside rejected/.
    for path in spool.layout.rejected.iterdir():
        assert "\n" not in path.name and "/" not in path.name and not path.name.startswith("-")
    # Dot-names are writers' temporaries: left alone, whatever they look like.
    assert sorted(p.name for p in inbox.iterdir()) == sorted(
        n for n in HOSTILE_NAMES if n.startswith(".")
    )
    assert not list(spool.layout.jobs.iterdir())
    outside_after = sorted(p.name for p in spool.root.parent.iterdir())
    assert outside_after == outside_before  # nothing was written next to the spool
