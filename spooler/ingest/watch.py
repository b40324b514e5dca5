"""The upload watcher: a proxy job per new source content, exactly once (the shell).

Called from the daemon loop (`UploadWatcher.scan`) like an intake: watchdog events on the
upload folders only wake the loop, the walk is the source of truth. Upload folders are
untrusted input: symlinks are never followed (neither folders nor files), only regular
files are opened (O_NOFOLLOW | O_NONBLOCK: a FIFO never blocks), sizes are capped, odd
names are skipped and logged once, and the walk is bounded in depth and entries.

Exactly once, across restarts: for each finished upload the watcher takes the content key
(contentkey.py) and creates `derived/keys/../<digest(source, key)>.json` exclusively
(state "pending", a fresh job id), then submits the job to the inbox atomically, then
marks the record "submitted". A record that exists means: never again. A crash between
the two steps leaves a "pending" record: the next pass resubmits it under the same job id
unless that job is already in the spool (looked for in the order jobs move: inbox,
claims, jobs, rejected), so it is neither lost nor run twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from spooler.clock import Clocks
from spooler.config import Settings
from spooler.fsutil import atomic_write_bytes, atomic_write_json, open_for_writing_elsewhere
from spooler.ingest.contentkey import content_key
from spooler.ingest.derived import DerivedLayout
from spooler.ingest.uploads import MAX_DEPTH, judge_name, proxy_job, upload_ready
from spooler.layout import SpoolLayout
from spooler.watcher import InboxWatcher

PENDING_GRACE_SECONDS = 30.0


class _TreeWatcher(InboxWatcher):
    """The inbox's watcher, recursive: uploads arrive in sub-folders (dates, projects)."""

    def _begin(self, observer: Any) -> Any:
        from spooler.watcher import _WakeHandler

        observer.schedule(_WakeHandler(self._wake, self.changed), str(self._inbox), recursive=True)
        observer.start()
        return observer


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    changed_at: float  # monotonic time the size or mtime last changed


class UploadWatcher:
    def __init__(self, settings: Settings, layout: SpoolLayout, wake: threading.Event) -> None:
        self.settings = settings
        self.layout = layout
        self.wake = wake
        self.log = structlog.get_logger().bind(room="uploads")
        self._seen: dict[str, _Seen] = {}
        self._skipped: set[str] = set()
        self._done: set[tuple[str, int, int]] = set()  # (source, size, mtime) handled
        self._watchers: list[_TreeWatcher] = []
        self.submitted: list[str] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, layout: SpoolLayout, wake: threading.Event
    ) -> UploadWatcher | None:
        ingest = settings.ingest
        return cls(settings, layout, wake) if ingest.upload_dirs and ingest.derived_root else None

    # -- the daemon's hooks ---------------------------------------------------------------
    def changed(self) -> bool:
        """An event in an upload folder since the last pass (or no watcher yet): the loop
        walks the folders then, or at its rescan; not on a job thread's wake-up."""
        return not self._watchers or any(w.changed.is_set() for w in self._watchers)

    def scan(self, clocks: Clocks) -> list[str]:
        """One pass over every upload folder; the job ids submitted."""
        if not self._watchers:
            self._start_watchers()
        for watcher in self._watchers:
            watcher.changed.clear()  # an event from now on calls for another pass
        out: list[str] = []
        for folder in self.settings.ingest.upload_dirs:
            root = self._media_root_of(folder)
            if root is None:
                self._skip_once(str(folder), "upload folder is not inside a media root")
                continue
            for relative, path in self._walk(folder, root):
                with contextlib.suppress(OSError):
                    job_id = self._consider(relative, path, clocks)
                    if job_id:
                        out.append(job_id)
        self.submitted += out
        return out

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        self._watchers.clear()

    # -- walking ----------------------------------------------------------------------------
    def _start_watchers(self) -> None:
        for folder in self.settings.ingest.upload_dirs:
            watcher = _TreeWatcher(folder, self.settings.watch_mode, self.wake, 1.0)
            try:
                watcher.start()
            except OSError as exc:  # a missing folder: the rescan still covers it later
                self.log.warning("upload_watch_failed", folder=str(folder), error=str(exc))
                continue
            self._watchers.append(watcher)

    def _media_root_of(self, folder: Path) -> Path | None:
        real = folder.resolve()
        for root in self.settings.media_roots:
            if real.is_relative_to(root.resolve()):
                return root.resolve()
        return None

    def _walk(self, folder: Path, root: Path) -> list[tuple[str, Path]]:
        """(media-root-relative path, path) of regular files, no symlink followed."""
        out: list[tuple[str, Path]] = []
        budget = self.settings.ingest.max_upload_files
        stack = [(folder.resolve(), 0)]
        root_setting = self.settings.ingest.derived_root
        derived = root_setting.resolve() if root_setting is not None else None
        while stack and budget > 0:
            directory, depth = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            names = frozenset(e.name for e in entries)
            for entry in sorted(entries, key=lambda e: e.name):
                budget -= 1
                if budget < 0:
                    self._skip_once(str(directory), "too many entries: the rest waits")
                    break
                if entry.is_dir(follow_symlinks=False):
                    # Never into the derived root: proxies of proxies, without end.
                    inside = Path(entry.path) == derived
                    if depth + 1 < MAX_DEPTH and not entry.name.startswith(".") and not inside:
                        stack.append((Path(entry.path), depth + 1))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue  # symlinks, FIFOs, sockets, devices: never opened
                try:
                    relative = Path(entry.path).relative_to(root).as_posix()
                except ValueError:
                    continue
                verdict = judge_name(relative, names)
                if verdict.ok:
                    out.append((relative, Path(entry.path)))
                elif not entry.name.startswith("."):
                    self._skip_once(relative, verdict.reason)
        return out

    def _skip_once(self, what: str, reason: str) -> None:
        if what not in self._skipped:
            self._skipped.add(what)
            self.log.info("upload_skipped", path=what.encode("utf-8", "replace").decode(),
                          reason=reason)  # fmt: skip

    # -- one file ---------------------------------------------------------------------------
    def _consider(self, relative: str, path: Path, clocks: Clocks) -> str | None:
        now = clocks.monotonic
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        if (relative, info.st_size, info.st_mtime_ns) in self._done:
            return None
        if info.st_size > self.settings.ingest.max_source_bytes:
            self._skip_once(relative, f"{info.st_size} bytes is over the upload size limit")
            return None
        seen = self._seen.get(relative)
        if seen is None or (seen.size, seen.mtime_ns) != (info.st_size, info.st_mtime_ns):
            self._seen[relative] = seen = _Seen(info.st_size, info.st_mtime_ns, now)
        ready = upload_ready(
            unchanged_for=now - seen.changed_at,
            settle_seconds=self.settings.ingest.upload_settle_seconds,
            writer_open=lambda: open_for_writing_elsewhere(path),
        )
        if not ready or info.st_size == 0:
            return None
        job_id = self._submit_once(relative, path, clocks.server or time.time())
        self._done.add((relative, info.st_size, info.st_mtime_ns))
        self._seen.pop(relative, None)
        return job_id

    def _submit_once(self, relative: str, path: Path, server_now: float) -> str | None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(path, flags)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            key = content_key(fd)
        finally:
            os.close(fd)
        assert self.settings.ingest.derived_root is not None
        derived = DerivedLayout(self.settings.ingest.derived_root)
        record = derived.key_record(f"{relative}\n{key}")
        record.parent.mkdir(parents=True, exist_ok=True)
        job_id = f"proxy-{secrets.token_hex(12)}"
        body = {"source": relative, "contentKey": key, "jobId": job_id, "state": "pending"}
        if not _create_exclusive(record, body):
            return self._finish_pending(record, server_now)
        self._submit(job_id, relative)
        atomic_write_json(record, {**body, "state": "submitted"})
        self.log.info("upload_proxy_submitted", source=relative, job_id=job_id, content_key=key)
        return job_id

    def _finish_pending(self, record: Path, server_now: float) -> str | None:
        """An existing record: done, unless a crash left it pending without its job."""
        try:
            body = json.loads(record.read_bytes())
        except (OSError, ValueError):
            return None
        if body.get("state") != "pending":
            return None
        age = max(0.0, server_now - record.stat().st_mtime)  # both the file server's clock
        job_id = str(body.get("jobId", ""))
        if age < PENDING_GRACE_SECONDS or self._in_spool(job_id):
            return None
        self._submit(job_id, str(body["source"]))
        atomic_write_json(record, {**body, "state": "submitted"})
        self.log.info("upload_proxy_resubmitted", source=body["source"], job_id=job_id)
        return job_id

    def _in_spool(self, job_id: str) -> bool:
        layout = self.layout
        if layout.inbox_job(job_id).exists():
            return True
        with contextlib.suppress(OSError):
            if any(name.startswith(f"{job_id}.") for name in os.listdir(layout.claims)):
                return True
        if layout.job_dir(job_id).exists():
            return True
        with contextlib.suppress(OSError):
            return any(name.startswith(job_id) for name in os.listdir(layout.rejected))
        return False

    def _submit(self, job_id: str, source: str) -> None:
        """The documented atomic submit: a hidden temporary name, then a rename."""
        data = json.dumps(proxy_job(source)).encode()
        atomic_write_bytes(self.layout.inbox_job(job_id), data)


def _create_exclusive(path: Path, body: dict[str, Any]) -> bool:
    """Write `path` with its full content only if it does not exist yet (link(2) fails on
    an existing name: two daemons watching one folder still submit once)."""
    tmp = path.with_name(f".tmp-{path.name}.{secrets.token_hex(4)}")
    atomic_write_json(tmp, body)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
