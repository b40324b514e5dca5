"""Prometheus textfile: pure rendering of fabricated statuses, and one real spool."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from spooler.errors import ErrorCode
from spooler.layout import SpoolLayout
from spooler.metrics import (
    DURATION_BUCKETS,
    SpoolSnapshot,
    StatusCache,
    collect_snapshot,
    render_metrics,
    update_metrics_file,
    write_metrics,
)
from spooler.status import ErrorInfo, JobStatus, State

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def status(job_id: str, state: State, run: float | None = None, **extra: Any) -> JobStatus:
    started = T0 if run is not None else None
    finished = T0 + timedelta(seconds=run) if run is not None else None
    return JobStatus(
        job_id=job_id,
        state=state,
        kind="testpattern",
        submitted_at=T0 - timedelta(seconds=5),
        updated_at=finished or T0,
        started_at=started,
        finished_at=finished,
        **extra,
    )


def error(code: ErrorCode) -> ErrorInfo:
    return ErrorInfo(code=code, message=str(code))


def samples(text: str) -> dict[str, float]:
    """name{labels} -> value; also checks every line is valid exposition format."""
    out: dict[str, float] = {}
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        if line.startswith("#"):
            assert line.startswith("# HELP "), line
            continue
        match = SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        family = re.sub(r"_(bucket|sum|count)$", "", match[1])
        assert match[1] in declared or family in declared, f"{match[1]} has no # TYPE"
        out[match[1] + (match[2] or "")] = float(match[3])
    return out


SNAPSHOT = SpoolSnapshot(
    statuses=(
        status("a", State.SUCCEEDED, run=0.5),
        status("b", State.SUCCEEDED, run=42.0),
        status("c", State.FAILED, run=3.0, error=error(ErrorCode.FFMPEG_FAILED), attempt=3,
               max_attempts=3),
        status("d", State.REJECTED, error=error(ErrorCode.INVALID_JSON)),
        status("e", State.RUNNING, progress=0.25),
        status("f", State.QUEUED),
        status("g", State.CANCELLED, run=1.0, error=error(ErrorCode.CANCELLED)),
        status("h", State.FAILED, run=9000.0, error=error(ErrorCode.FFMPEG_FAILED)),
    ),
    inbox_waiting=4,
    unreadable=1,
)  # fmt: skip


def test_jobs_by_state_and_queue_depth() -> None:
    got = samples(render_metrics(SNAPSHOT))
    assert got['spooler_jobs{state="succeeded"}'] == 2
    assert got['spooler_jobs{state="failed"}'] == 2
    assert got['spooler_jobs{state="rejected"}'] == 1
    assert got['spooler_jobs{state="running"}'] == 1
    assert got['spooler_jobs{state="queued"}'] == 1
    assert got['spooler_jobs{state="cancelled"}'] == 1
    assert got["spooler_queue_depth"] == 4
    assert got["spooler_jobs_waiting"] == 5
    assert got["spooler_status_unreadable"] == 1
    assert got["spooler_job_retries"] == 2
    assert got['spooler_running_progress{job_id="e"}'] == 0.25


def test_failures_by_code() -> None:
    got = samples(render_metrics(SNAPSHOT))
    assert got['spooler_job_failures{state="failed",code="ffmpeg_failed"}'] == 2
    assert got['spooler_job_failures{state="rejected",code="invalid_json"}'] == 1
    assert not any("cancelled" in key for key in got if key.startswith("spooler_job_failures"))


def test_duration_histogram_is_cumulative() -> None:
    got = samples(render_metrics(SNAPSHOT))
    ok = 'state="succeeded"'
    assert got[f'spooler_job_duration_seconds_bucket{{{ok},le="1"}}'] == 1
    assert got[f'spooler_job_duration_seconds_bucket{{{ok},le="60"}}'] == 2
    assert got[f'spooler_job_duration_seconds_bucket{{{ok},le="+Inf"}}'] == 2
    assert got[f"spooler_job_duration_seconds_sum{{{ok}}}"] == 42.5
    assert got[f"spooler_job_duration_seconds_count{{{ok}}}"] == 2
    failed = 'state="failed"'
    assert got[f'spooler_job_duration_seconds_bucket{{{failed},le="7200"}}'] == 1
    assert got[f'spooler_job_duration_seconds_bucket{{{failed},le="+Inf"}}'] == 2
    for state in ("succeeded", "failed", "cancelled"):
        counts = [
            got[f'spooler_job_duration_seconds_bucket{{state="{state}",le="{b:g}"}}']
            for b in DURATION_BUCKETS
        ]
        assert counts == sorted(counts)


def test_empty_spool_renders_zeroes_and_is_deterministic() -> None:
    text = render_metrics(SpoolSnapshot())
    got = samples(text)
    assert got['spooler_jobs{state="queued"}'] == 0
    assert got['spooler_job_duration_seconds_count{state="succeeded"}'] == 0
    assert text.endswith("\n")
    assert render_metrics(SNAPSHOT) == render_metrics(SNAPSHOT)


def test_label_values_are_escaped() -> None:
    text = render_metrics(SpoolSnapshot((status('x"\\y', State.RUNNING),)))
    assert 'spooler_running_progress{job_id="x\\"\\\\y"} 0' in text


def test_write_metrics_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "textfile" / "spooler.prom"
    write_metrics(target, "a 1\n")
    write_metrics(target, "a 2\n")
    assert target.read_text() == "a 2\n"
    assert [p.name for p in target.parent.iterdir()] == ["spooler.prom"]


def test_collect_from_a_fabricated_spool(tmp_path: Path) -> None:
    layout = SpoolLayout(tmp_path / "spool")
    for s in SNAPSHOT.statuses[:3]:
        layout.job_dir(s.job_id).mkdir(parents=True)
        layout.status_file(s.job_id).write_text(json.dumps(s.to_json()))
    layout.job_dir("broken").mkdir()
    layout.status_file("broken").write_text("{not json")
    layout.job_dir("staging-without-status").mkdir()
    layout.inbox.mkdir()
    for name in ("w1.json", "w2.json", ".w3.json.tmp", "w4.cancel", "bad name.json"):
        (layout.inbox / name).write_text("{}")
    cache = StatusCache()
    snap = collect_snapshot(layout, cache)
    assert sorted(s.job_id for s in snap.statuses) == ["a", "b", "c"]
    assert snap.inbox_waiting == 2
    assert snap.unreadable == 1
    assert set(cache.entries) == {"a", "b", "c"}  # final states only
    # Cached entries are reused, and dropped once the job folder is gone.
    (layout.job_dir("a") / "status.json").unlink()
    layout.job_dir("a").rmdir()
    assert sorted(s.job_id for s in collect_snapshot(layout, cache).statuses) == ["b", "c"]
    assert set(cache.entries) == {"b", "c"}


def test_metrics_of_a_real_spool(
    spool: Any, make_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    # Fixtures of tests/conftest.py (not imported by name: tests/export/conftest.py shadows
    # the module name `conftest` when the whole suite is collected).
    make_daemon()
    tiny = {"kind": "testpattern", "durationSeconds": 0.2, "width": 32, "height": 32, "fps": 10}
    spool.submit("ok-1", tiny)
    spool.submit("bad-1", b"{nope")
    spool.wait_final("ok-1")
    spool.wait_final("bad-1")
    target = tmp_path / "textfile" / "spooler.prom"
    snap = update_metrics_file(spool.layout, target)
    assert len(snap.statuses) == 2
    got = samples(target.read_text())
    assert got['spooler_jobs{state="succeeded"}'] == 1
    assert got['spooler_job_failures{state="rejected",code="invalid_json"}'] == 1
    assert got['spooler_job_duration_seconds_count{state="succeeded"}'] == 1
    # The one-shot command prints the same families.
    env = {"SPOOLER_SPOOL_DIR": str(spool.root), "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(
        [sys.executable, "-m", "spooler", "metrics"],
        capture_output=True, text=True, env=env, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert samples(printed)['spooler_jobs{state="succeeded"}'] == 1
