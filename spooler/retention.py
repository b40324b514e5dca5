"""Retention: finished jobs past their state's retention, rejected/ entries past theirs,
and the leftovers of interrupted removals in trash/. Active jobs are never deleted.

The decisions are pure (`policy.is_expired`, `policy.rejected_expired`); this module only
lists and removes. Every removal renames into trash/ first, so a reader never sees a
half-deleted folder.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.fsutil import remove_entry, remove_tree
from spooler.jobtable import JobTable
from spooler.policy import PASS_BUDGET, is_expired, rejected_expired
from spooler.spool import printable_name, read_status

ERROR_SUFFIX = ".error.json"


class Retention:
    def __init__(
        self,
        settings: Settings,
        table: JobTable,
        *,
        before_delete: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.layout = table.layout
        self.log = structlog.get_logger()
        # Webhooks: a job's undelivered events are made durable outside its folder first.
        self.before_delete = before_delete

    def delete_job(self, job_id: str) -> None:
        if self.before_delete is not None:
            self.before_delete(job_id)
        # Renamed into trash/ at once; a huge folder's rest is emptied by the next pass.
        deadline = time.monotonic() + PASS_BUDGET * self.settings.heartbeat_seconds
        remove_tree(self.layout.job_dir(job_id), self.layout.trash, deadline=deadline)
        self.table.final.pop(job_id, None)
        self.log.info("job_deleted", job_id=job_id)

    def run(self, clocks: Clocks) -> bool:
        """One pass; True when its time budget ran out with work left (come back soon)."""
        budget_ends = time.monotonic() + PASS_BUDGET * self.settings.heartbeat_seconds
        retention = self.settings.retention
        for job_id, final in list(self.table.final.items()):
            if time.monotonic() >= budget_ends:
                return True
            if not is_expired(final.state, final.finished_at, clocks.wall, retention):
                continue
            # Confirm on disk: the id may have been deleted and reused since we cached it.
            try:
                current = read_status(self.layout, job_id)
            except ValueError:
                current = None
            if current is None:
                self.table.final.pop(job_id, None)
            elif is_expired(current.state, current.finished_at, clocks.wall, retention):
                self.delete_job(job_id)
        if self._rejected(clocks.server, budget_ends):
            return True
        # Leftovers of removals interrupted by a crash.
        for entry in _entries(self.layout.trash):
            if not remove_entry(Path(entry.path), deadline=budget_ends):
                return True
        return False

    def _rejected(self, server_now: float, budget_ends: float) -> bool:
        """An entry ages by its .error.json (written at move time; the moved file keeps
        its own mtime), or by its own ctime where a crash left it without one. Every entry
        is untrusted (a folder or FIFO named like an error file): removed, never opened."""
        days = self.settings.retention.rejected_days
        entries = {e.name: e for e in _entries(self.layout.rejected)}
        for name, entry in entries.items():
            if time.monotonic() >= budget_ends:
                return True
            if name.startswith("."):
                continue
            try:
                if name.endswith(ERROR_SUFFIX):
                    # An error file goes with its entry, or alone once its entry is gone.
                    if name.removesuffix(ERROR_SUFFIX) in entries:
                        continue
                    moved_at = entry.stat(follow_symlinks=False).st_mtime
                    if rejected_expired(moved_at, server_now, days):
                        remove_entry(Path(entry.path))
                    continue
                error = entries.get(name + ERROR_SUFFIX)
                info = entry.stat(follow_symlinks=False)
                moved_at = error.stat(follow_symlinks=False).st_mtime if error else info.st_ctime
                if not rejected_expired(moved_at, server_now, days):
                    continue
                if stat.S_ISDIR(info.st_mode):
                    remove_tree(Path(entry.path), self.layout.trash, deadline=budget_ends)
                else:
                    remove_entry(Path(entry.path))
                if error is not None:
                    remove_entry(Path(error.path))
            except OSError as exc:  # one odd entry never stops the pass
                self.log.warning(
                    "rejected_entry_not_removed", name=printable_name(name), error=str(exc)
                )
        return False


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []
