"""`spooler audit`: check a spool's invariants and count what happened.

Used after fault drills (the kill loop, bench/soak) and by operators after an incident:
every job final (or reported active), every status valid, nothing temporary left, every
succeeded job's outputs present with the listed size, each output published once, and no
job completed twice.
"""

from __future__ import annotations

import collections
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spooler.fsutil import TEMP_PREFIX, FileTooLarge, UnsafeFile, read_untrusted
from spooler.layout import SpoolLayout
from spooler.spool import job_ids, printable_name, read_status_file
from spooler.status import FINAL_STATES, State

LOG_READ_LIMIT = 64 * 1024 * 1024


@dataclass
class AuditReport:
    jobs: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    recovered: int = 0
    completed_twice: list[str] = field(default_factory=list)
    published_twice: list[str] = field(default_factory=list)
    missing_outputs: list[str] = field(default_factory=list)
    invalid_status: list[str] = field(default_factory=list)
    no_status: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    claims_left: list[str] = field(default_factory=list)
    inbox_left: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.completed_twice
            or self.published_twice
            or self.missing_outputs
            or self.invalid_status
            or self.no_status
            or self.temp_files
            or self.claims_left
        )

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def _temp_files(layout: SpoolLayout) -> list[str]:
    found = []
    for directory in (layout.inbox, layout.jobs):
        for dirpath, dirnames, filenames in os.walk(directory):
            for name in [*dirnames, *filenames]:
                if name.startswith(TEMP_PREFIX):
                    found.append(printable_name(str(Path(dirpath, name).relative_to(layout.root))))
    return sorted(found)


def _publish_counts(log: Path) -> collections.Counter[str]:
    try:
        raw = read_untrusted(log, LOG_READ_LIMIT, in_real_dir=True)
    except (OSError, UnsafeFile, FileTooLarge):
        return collections.Counter()
    lines = raw.decode(errors="replace").splitlines()
    return collections.Counter(
        line.split()[2]
        for line in lines
        if line.startswith("# published ") and len(line.split()) > 2
    )


def audit_spool(layout: SpoolLayout) -> AuditReport:
    report = AuditReport()
    states: collections.Counter[str] = collections.Counter()
    for job_id in sorted(job_ids(layout)):
        report.jobs += 1
        try:
            status = read_status_file(layout.status_file(job_id))
        except (ValueError, OSError):
            report.invalid_status.append(job_id)
            continue
        if status is None:
            report.no_status.append(job_id)
            continue
        states[status.state.value] += 1
        report.attempts += status.attempt
        reasons = [h.reason for h in status.history]
        report.recovered += reasons.count("worker_lost") + reasons.count("finished_by_recovery")
        if status.state not in FINAL_STATES:
            report.active.append(job_id)
        if sum(1 for h in status.history if h.state is State.SUCCEEDED) > 1:
            report.completed_twice.append(job_id)
        if status.state is State.SUCCEEDED:
            for output in status.outputs:
                path = layout.job_dir(job_id) / output.path
                if not _regular_file_of_size(path, output.size_bytes):
                    report.missing_outputs.append(f"{job_id}/{output.path}")
            counts = _publish_counts(layout.log_file(job_id))
            report.published_twice += [f"{job_id}/{n}" for n, c in counts.items() if c > 1]
    report.by_state = dict(sorted(states.items()))
    report.temp_files = _temp_files(layout)
    report.claims_left = sorted(printable_name(p.name) for p in _listing(layout.claims))
    report.inbox_left = sorted(
        printable_name(p.name) for p in _listing(layout.inbox) if not p.name.startswith(".")
    )
    return report


def _regular_file_of_size(path: Path, size: int) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def _listing(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def format_report(report: AuditReport) -> str:
    lines = [
        f"jobs: {report.jobs}  " + "  ".join(f"{k}: {v}" for k, v in report.by_state.items()),
        f"attempts: {report.attempts}  recovered after a lost worker: {report.recovered}",
    ]
    for label in (
        "completed_twice",
        "published_twice",
        "missing_outputs",
        "invalid_status",
        "no_status",
        "active",
        "temp_files",
        "claims_left",
        "inbox_left",
    ):
        items: list[str] = getattr(report, label)
        shown = ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
        lines.append(f"{label.replace('_', ' ')}: {len(items)}" + (f" ({shown})" if items else ""))
    lines.append("OK" if report.ok else "INVARIANTS VIOLATED")
    return "\n".join(lines)
