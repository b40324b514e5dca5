"""A canary tree outside the spool, watched with inotify (opens and reads included).

atime cannot tell whether a daemon read a file (relatime, noatime mounts), so every
directory of the tree and every file in it gets its own inotify watch. Two kinds of file:

- `tree/`: reachable from the spool only through symlinks and paths such as `../../x` in
  status files. Any event on them, or on any directory of the canary (a listing is an
  IN_OPEN of the directory), is a defect: the daemon followed a link or a path out of the
  spool.
- `linked/`: files that the spool also holds as hard links. A hard link inside the spool is
  the same inode, so reading it through the spool name is reading a spool file; writing it
  (IN_MODIFY) or changing its content or mode writes outside the spool and is a defect.
  Reads are reported through the parent's watch only when done through the canary's own
  path (inotify reports child events to the directory the name was opened in).

The harness must not touch the tree itself while it is watched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

IN_ACCESS = 0x001
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_CLOSE_NOWRITE = 0x010
IN_OPEN = 0x020
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

# Everything that says "touched"; closes are implied by opens.
WATCHED = (
    IN_ACCESS
    | IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_OPEN
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_NAMES = {
    IN_ACCESS: "IN_ACCESS",
    IN_MODIFY: "IN_MODIFY",
    IN_ATTRIB: "IN_ATTRIB",
    IN_CLOSE_WRITE: "IN_CLOSE_WRITE",
    IN_OPEN: "IN_OPEN",
    IN_MOVED_FROM: "IN_MOVED_FROM",
    IN_MOVED_TO: "IN_MOVED_TO",
    IN_CREATE: "IN_CREATE",
    IN_DELETE: "IN_DELETE",
    IN_DELETE_SELF: "IN_DELETE_SELF",
    IN_MOVE_SELF: "IN_MOVE_SELF",
    IN_Q_OVERFLOW: "IN_Q_OVERFLOW",
}
# For hard-linked inodes: only a change of content is a write outside the spool (a link
# being added or removed in the spool is an IN_ATTRIB, an open through it is a spool read,
# and an open for writing that writes nothing, as a check of st_nlink after the open does,
# changes nothing).
_LINKED_DEFECTS = IN_MODIFY

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_EVENT = struct.Struct("iIII")

# The files of the canary; names are what the fuzzer's symlinks and paths point at.
TREE_FILES = {
    "tree/secret.txt": b"secret: never read by the daemon\n",
    "tree/precious.txt": b"precious: never deleted by the daemon\n",
    "tree/job.json": b'{"kind": "testpattern", "durationSeconds": 0.2, "width": 32}',
    "tree/status.json": b'{"schemaVersion": 1, "jobId": "canary", "state": "queued"}',
    "tree/dir/inner.txt": b"inner\n",
    "tree/dir/sub/deep.txt": b"deep\n",
}
LINKED_FILES = {
    "linked/job.json": b'{"kind": "testpattern", "durationSeconds": 0.2, "width": 32}',
    "linked/status.json": b"{}",
    "linked/log.txt": b"a log that must not grow\n",
}
TREE_DIRS = ("tree", "tree/dir", "tree/dir/sub", "linked")


def event_names(mask: int) -> list[str]:
    return [name for bit, name in _NAMES.items() if mask & bit]


@dataclass(frozen=True)
class Touch:
    """One event on the canary: what happened and to which canary name."""

    what: str  # IN_OPEN, IN_MODIFY, ...
    name: str  # canary-relative path, e.g. tree/secret.txt or tree/dir/

    @property
    def signature(self) -> str:
        # A temporary name's random suffix would make one cause many signatures.
        name = re.sub(r"\.tmp-.*", ".tmp-*", self.name.rstrip("/"))
        return f"canary:{self.what}:{name or '/'}"


class Canary:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd = -1
        self._wd: dict[int, tuple[str, bool]] = {}  # wd -> (name, is_linked_file)
        self._digests: dict[str, tuple[bytes, int]] = {}

    def build(self) -> None:
        for name in TREE_DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for name, data in {**TREE_FILES, **LINKED_FILES}.items():
            path = self.root / name
            path.write_bytes(data)
            os.chmod(path, 0o644)
        self._digests = self._snapshot()

    def path(self, name: str) -> Path:
        return self.root / name

    def _snapshot(self) -> dict[str, tuple[bytes, int]]:
        out = {}
        for name in (*TREE_FILES, *LINKED_FILES):
            path = self.root / name
            try:
                info = os.lstat(path)
                out[name] = (hashlib.sha256(path.read_bytes()).digest(), info.st_mode)
            except OSError:
                out[name] = (b"missing", 0)
        return out

    # -- watching ------------------------------------------------------------------------
    def start(self) -> None:
        # EMFILE: the user's inotify instances (128 by default) are shared with every
        # daemon and test on the machine; wait for one to be freed rather than fail.
        for _ in range(100):
            fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0 or ctypes.get_errno() != errno.EMFILE:
                break
            time.sleep(0.1)
        if fd < 0:
            limit = Path("/proc/sys/fs/inotify/max_user_instances").read_text().strip()
            raise OSError(
                ctypes.get_errno(),
                f"inotify_init1: no inotify instance for the canary "
                f"(fs.inotify.max_user_instances is {limit})",
            )
        self._fd = fd
        self._add("", self.root, linked=False)
        for name in TREE_DIRS:
            self._add(f"{name}/", self.root / name, linked=False)
        for name in TREE_FILES:
            self._add(name, self.root / name, linked=False)
        for name in LINKED_FILES:
            self._add(name, self.root / name, linked=True)

    def _add(self, name: str, path: Path, *, linked: bool) -> None:
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), WATCHED)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self._wd[wd] = (name, linked)

    def stop(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._wd.clear()

    def drain(self) -> list[Touch]:
        """Every defect-worthy event since the last drain."""
        touches: list[Touch] = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return touches
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw_name = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    touches.append(Touch("IN_Q_OVERFLOW", ""))
                    continue
                if mask & IN_IGNORED or wd not in self._wd:
                    continue
                where, linked = self._wd[wd]
                child = raw_name.rstrip(b"\0").decode(errors="replace")
                if linked:
                    mask &= _LINKED_DEFECTS
                name = f"{where}{child}" if child else where or "/"
                for what in event_names(mask):
                    touches.append(Touch(what, name))

    def changed_files(self) -> list[Touch]:
        """Content or mode changes (checked after the watch is stopped: hashing reads)."""
        now = self._snapshot()
        return [
            Touch("CONTENT_CHANGED", name)
            for name, before in self._digests.items()
            if now.get(name) != before
        ]
