"""Prometheus metrics as a text file, for node_exporter's textfile collector.

Three layers, so the daemon (or `spooler metrics`) decides when to run the impure parts:

- `collect_snapshot(layout, cache)`: reads the spool (status files, inbox names) into a
  `SpoolSnapshot`; final statuses are cached by (mtime, size) so a periodic call stays cheap;
- `render_metrics(snapshot)`: PURE, the Prometheus text exposition format (version 0.0.4);
- `write_metrics(path, text)`: atomic replace, so node_exporter never reads half a file.

`update_metrics_file(layout, path, cache)` does all three. Every number describes the jobs
*currently in the spool* (retention keeps finished ones for days), so they are gauges; the
duration histogram is a snapshot too (use histogram_quantile on its buckets directly, not on
rate()).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from spooler.fsutil import atomic_write_bytes
from spooler.layout import EntryKind, SpoolLayout, classify_inbox_name
from spooler.spool import read_status_file
from spooler.status import FINAL_STATES, JobStatus, State
from spooler.webhooks.outbox import Outbox

DURATION_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600,
)  # fmt: skip


@dataclass(frozen=True)
class SpoolSnapshot:
    """What the metrics are computed from (fabricate one freely in tests)."""

    statuses: tuple[JobStatus, ...] = ()
    inbox_waiting: int = 0
    unreadable: int = 0
    # outbox/ (docs/webhooks.md): deliveries by state, and the oldest pending one's age
    webhooks: tuple[tuple[str, int], ...] = ()
    webhook_oldest_pending_seconds: float = 0.0


@dataclass
class StatusCache:
    """Parsed final statuses by job id, valid while the file's (mtime_ns, size) is unchanged."""

    entries: dict[str, tuple[int, int, JobStatus]] = field(default_factory=dict)


def _read_status(path: Path, job_id: str, cache: StatusCache | None) -> JobStatus | None:
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if cache is not None:
        hit = cache.entries.get(job_id)
        if hit is not None and hit[0] == info.st_mtime_ns and hit[1] == info.st_size:
            return hit[2]
    status = read_status_file(path)
    if status is None:
        return None
    if cache is not None and status.state in FINAL_STATES:
        cache.entries[job_id] = (info.st_mtime_ns, info.st_size, status)
    return status


def collect_snapshot(layout: SpoolLayout, cache: StatusCache | None = None) -> SpoolSnapshot:
    """Read every status file and count the job files waiting in the inbox."""
    statuses: list[JobStatus] = []
    unreadable = 0
    try:
        job_ids = [e.name for e in os.scandir(layout.jobs) if not e.name.startswith(".")]
    except FileNotFoundError:
        job_ids = []
    for job_id in job_ids:
        try:
            status = _read_status(layout.status_file(job_id), job_id, cache)
        except (OSError, ValidationError, ValueError):
            unreadable += 1
            continue
        if status is not None:
            statuses.append(status)
    if cache is not None:
        present = set(job_ids)
        for gone in [k for k in cache.entries if k not in present]:
            del cache.entries[gone]
    try:
        names = os.listdir(layout.inbox)
    except FileNotFoundError:
        names = []
    waiting = sum(classify_inbox_name(n).kind is EntryKind.JOB for n in names)
    outbox = Outbox(layout)
    counts = outbox.counts()
    return SpoolSnapshot(
        tuple(statuses),
        waiting,
        unreadable,
        tuple(sorted(counts.items())),
        outbox.oldest_pending_age(time.time()),
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def run_seconds(status: JobStatus) -> float | None:
    """Wall time of the job's last attempt: startedAt -> finishedAt (None if it never ran)."""
    if status.started_at is None or status.finished_at is None:
        return None
    return max(0.0, (status.finished_at - status.started_at).total_seconds())


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")


def render_metrics(snapshot: SpoolSnapshot) -> str:
    """The snapshot in Prometheus text format; pure and deterministic (sorted labels)."""
    out = _Writer()
    by_state = Counter(s.state for s in snapshot.statuses)

    out.family("spooler_jobs", "gauge", "Jobs in the spool by state (jobs/<id>/status.json).")
    for state in State:
        out.sample("spooler_jobs", by_state.get(state, 0), state=state.value)

    out.family(
        "spooler_queue_depth",
        "gauge",
        "Job files waiting in inbox/ to be claimed (submitted, no status yet).",
    )
    out.sample("spooler_queue_depth", snapshot.inbox_waiting)

    out.family(
        "spooler_jobs_waiting",
        "gauge",
        "Jobs not yet running: waiting in inbox/ plus claimed jobs in state queued.",
    )
    out.sample("spooler_jobs_waiting", snapshot.inbox_waiting + by_state.get(State.QUEUED, 0))

    failures = Counter(
        (s.state.value, s.error.code.value)
        for s in snapshot.statuses
        if s.state in (State.FAILED, State.REJECTED) and s.error is not None
    )
    out.family(
        "spooler_job_failures",
        "gauge",
        "Failed and rejected jobs in the spool by error code (docs/protocol.md section 9).",
    )
    for (state_name, code), count in sorted(failures.items()):
        out.sample("spooler_job_failures", count, state=state_name, code=code)

    retries = sum(max(0, s.attempt - 1) for s in snapshot.statuses)
    out.family(
        "spooler_job_retries",
        "gauge",
        "Attempts beyond the first, summed over the jobs in the spool.",
    )
    out.sample("spooler_job_retries", retries)

    out.family(
        "spooler_job_duration_seconds",
        "histogram",
        "Run time of the last attempt (startedAt to finishedAt) of finished jobs in the spool.",
    )
    durations: dict[str, list[float]] = {}
    for status in snapshot.statuses:
        seconds = run_seconds(status) if status.state in FINAL_STATES else None
        if seconds is not None:
            durations.setdefault(status.state.value, []).append(seconds)
    for state in (State.SUCCEEDED, State.FAILED, State.CANCELLED):
        _histogram(out, "spooler_job_duration_seconds", durations.get(state.value, []),
                   state=state.value)  # fmt: skip

    running = [s for s in snapshot.statuses if s.state is State.RUNNING]
    out.family("spooler_running_progress", "gauge", "Progress (0..1) of each running job.")
    for status in sorted(running, key=lambda s: s.job_id):
        out.sample("spooler_running_progress", status.progress, job_id=status.job_id)

    out.family(
        "spooler_status_unreadable",
        "gauge",
        "Status files that could not be read or parsed at the last collection.",
    )
    out.sample("spooler_status_unreadable", snapshot.unreadable)

    out.family(
        "spooler_webhook_deliveries",
        "gauge",
        "Webhook/command deliveries in outbox/ by state (pending, delivered, failed).",
    )
    for outcome, count in snapshot.webhooks:
        out.sample("spooler_webhook_deliveries", count, state=outcome)
    out.family(
        "spooler_webhook_oldest_pending_seconds",
        "gauge",
        "Age of the oldest delivery still pending (0: none).",
    )
    out.sample(
        "spooler_webhook_oldest_pending_seconds", round(snapshot.webhook_oldest_pending_seconds, 3)
    )
    return "\n".join(out.lines) + "\n"


def _histogram(out: _Writer, name: str, values: Iterable[float], **labels: str) -> None:
    ordered = sorted(values)
    for bound in (*DURATION_BUCKETS, math.inf):
        count = sum(1 for v in ordered if v <= bound)
        out.sample(f"{name}_bucket", count, **labels, le=_number(bound))
    out.sample(f"{name}_sum", round(sum(ordered), 6), **labels)
    out.sample(f"{name}_count", len(ordered), **labels)


def write_metrics(path: Path, text: str) -> None:
    """Replace `path` atomically (temporary dot-file in the same folder, then rename).

    node_exporter's textfile collector reads only *.prom names, so the temporary name is
    never read. The folder is created if needed. No fsync: a lost update is harmless.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"), durable=False)


def update_metrics_file(
    layout: SpoolLayout, path: Path, cache: StatusCache | None = None
) -> SpoolSnapshot:
    """Collect, render and write in one call (what the daemon runs on an interval)."""
    snapshot = collect_snapshot(layout, cache)
    write_metrics(path, render_metrics(snapshot))
    return snapshot
