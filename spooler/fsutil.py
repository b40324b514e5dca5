"""Careful file primitives: atomic replace, untrusted reads, writer detection, safe removal."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def fsync_dir(directory: Path) -> None:
    """Make a rename or create inside `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on directories
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name_for(path: Path) -> Path:
    """A hidden, unique sibling: readers and the inbox scanner ignore dot-files."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}")


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` so a reader sees the old or the new content, never a mix."""
    tmp = temp_name_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o664)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    try:
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any, *, durable: bool = True) -> None:
    data = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False).encode() + b"\n"
    atomic_write_bytes(path, data, durable=durable)


class UnsafeFile(Exception):
    """The path is not a plain regular file we may read (symlink, FIFO, device, dir)."""


class FileTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def read_untrusted(path: Path, limit: int, *, in_real_dir: bool = False) -> bytes:
    """Read a regular file without following symlinks or blocking on FIFOs/devices.

    `in_real_dir`: the file's folder must not be a symlink either (a job folder a client
    replaced by a link out of the spool); the file is then opened relative to that folder.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    dir_fd: int | None = None
    try:
        if in_real_dir:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        fd = os.open(path.name if dir_fd is not None else path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise UnsafeFile("is a symbolic link") from exc
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise UnsafeFile("is not a regular file") from exc
        raise
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile("is not a regular file")
        if info.st_nlink > 1:
            # Another name of the same file may lie outside the spool: reading it would read
            # a file the daemon was never given.
            raise UnsafeFile("has other hard links")
        if info.st_size > limit:
            raise FileTooLarge(info.st_size, limit)
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(65536, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise FileTooLarge(len(data), limit)
        return data
    finally:
        os.close(fd)


def lexists(path: Path) -> bool:
    """Is there an entry at `path`, of any type? Never follows a symlink (a marker may be
    a dangling link, a directory or a FIFO: each still counts as the marker)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def is_real_dir(path: Path) -> bool:
    """A directory itself, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def create_marker(path: Path) -> None:
    """Create an empty marker file unless something is already there; never follows a link
    and never blocks on a FIFO that a client put in its place."""
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK, 0o664
        )
    except FileExistsError:
        return
    os.close(fd)


def open_log_for_append(path: Path) -> int:
    """A descriptor appending to the regular file `path`, created if missing.

    Whatever else a client left there (a symlink pointing out of the spool, a FIFO, a
    directory) is moved out of the way first, so a log line never lands outside the spool.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    for _ in range(3):
        try:
            fd = os.open(path, flags, 0o664)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.EISDIR, errno.ENXIO):
                raise
        else:
            info = os.fstat(fd)
            # A hard link to a file elsewhere is as foreign as a symlink: appending would
            # write outside the spool.
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                return fd
            os.close(fd)
        # Rename the impostor aside (a rename moves a link, never its target); the hidden
        # temporary name is removed with the job's other leftovers.
        with contextlib.suppress(FileNotFoundError):
            path.rename(temp_name_for(path))
    raise UnsafeFile(f"{path.name} cannot be made a regular file")


def open_for_writing_elsewhere(path: Path) -> bool | None:
    """True if another process has `path` open for writing; None if the OS cannot tell.

    A Linux read lease is refused while any process holds the file open for writing, so
    it tells when a non-atomic writer such as `cp` has finished. It needs a local
    filesystem and ownership of the file (or CAP_LEASE); NFS and SMB answer None and the
    caller falls back to waiting for the file to stop changing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return True
        return None
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    os.close(fd)
    return False


def leases_work(directory: Path) -> bool:
    """Does this filesystem grant read leases to us? Probed on a file nobody else opens:
    network filesystems refuse (or cannot honour) leases, and then only settling is safe."""
    probe = directory / f".lease-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        probe.touch()
    except OSError:
        return False
    try:
        return open_for_writing_elsewhere(probe) is False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def remove_tree(path: Path, trash_dir: Path, *, deadline: float | None = None) -> None:
    """Remove a folder so readers never see it half-deleted: rename it into trash/ (one
    atomic step), then delete it there. What `deadline` (time.monotonic()) leaves is
    finished by the next emptying of trash/ (retention)."""
    trash_dir.mkdir(parents=True, exist_ok=True)
    target = trash_dir / f"{path.name}.{secrets.token_hex(4)}"
    try:
        path.rename(target)
    except FileNotFoundError:
        return
    remove_entry(target, deadline=deadline)


def remove_entry(path: Path, *, deadline: float | None = None) -> bool:
    """Delete whatever is at `path`, never opening anything but a real directory (a FIFO
    would block, a symlink must never lead out of the spool). True once it is gone; False
    when `deadline` (time.monotonic()) came first, to be called again later."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(info.st_mode):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    return _remove_folder(path, deadline)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _remove_folder(top: Path, deadline: float | None) -> bool:
    """Depth-first removal through directory descriptors: linear in the tree's size, no
    recursion and no path-length limit (a client can nest folders thousands deep), links
    unlinked and never entered. One descriptor is open at a time: the way back up is "..",
    which is the folder we came down from (nothing below was a link)."""
    try:
        fd = os.open(top, _DIR_FLAGS)
    except FileNotFoundError:
        return True
    except OSError:
        return True  # replaced by something that is not a folder: nothing of ours to remove
    names: list[str] = []  # the path below `top`, as names
    given_up: set[int] = set()  # inodes of folders that could not be removed (best effort)
    try:
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            subfolder = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.inode() not in given_up:
                            subfolder = subfolder or entry.name
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=fd)
            if subfolder is not None:
                try:
                    child = os.open(subfolder, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    # Swapped for a link or removed meanwhile: unlink what is there now.
                    with contextlib.suppress(OSError):
                        os.unlink(subfolder, dir_fd=fd)
                    continue
                os.close(fd)
                fd = child
                names.append(subfolder)
                continue
            if not names:
                break
            done = os.fstat(fd).st_ino
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            try:
                os.rmdir(names.pop(), dir_fd=fd)
            except OSError:
                given_up.add(done)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        top.rmdir()
    return True


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in `directory` (not recursive)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX):
            path = Path(entry.path)
            remove_entry(path)
            removed.append(path)
    return removed
