"""Retention: finished jobs past their state's retention, rejected/ entries past theirs,
and the leftovers of interrupted removals in trash/. Active jobs are never deleted.

The decisions are pure (`policy.is_expired`, `policy.rejected_expired`); this module only
lists and removes. Every removal renames into trash/ first, so a reader never sees a
half-deleted folder.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import structlog

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.fsutil import remove_entry, remove_tree
from spooler.jobtable import JobTable
from spooler.policy import is_expired, rejected_expired
from spooler.spool import read_status

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
        remove_tree(self.layout.job_dir(job_id), self.layout.trash)
        self.table.final.pop(job_id, None)
        self.log.info("job_deleted", job_id=job_id)

    def run(self, clocks: Clocks) -> None:
        retention = self.settings.retention
        for job_id, final in list(self.table.final.items()):
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
        self._rejected(clocks.server)
        # Leftovers of removals interrupted by a crash.
        for entry in _entries(self.layout.trash):
            remove_entry(Path(entry.path))

    def _rejected(self, server_now: float) -> None:
        """An entry ages by its .error.json (written at move time; the moved file keeps
        its own mtime), or by its own ctime where a crash left it without one."""
        days = self.settings.retention.rejected_days
        entries = {e.name: e for e in _entries(self.layout.rejected)}
        for name, entry in entries.items():
            if name.endswith(ERROR_SUFFIX) or name.startswith("."):
                continue
            error = entries.get(name + ERROR_SUFFIX)
            with contextlib.suppress(FileNotFoundError):
                info = entry.stat(follow_symlinks=False)
                moved_at = error.stat(follow_symlinks=False).st_mtime if error else info.st_ctime
                if not rejected_expired(moved_at, server_now, days):
                    continue
                if stat.S_ISDIR(info.st_mode):
                    remove_tree(Path(entry.path), self.layout.trash)
                else:
                    Path(entry.path).unlink(missing_ok=True)
                if error is not None:
                    Path(error.path).unlink(missing_ok=True)
        for name, entry in entries.items():  # error files whose entry is gone
            if name.endswith(ERROR_SUFFIX) and name.removesuffix(ERROR_SUFFIX) not in entries:
                with contextlib.suppress(FileNotFoundError):
                    moved_at = entry.stat(follow_symlinks=False).st_mtime
                    if rejected_expired(moved_at, server_now, days):
                        Path(entry.path).unlink()


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []
