"""The spawn helper (spooler/spawn.py starts it): a tiny single-threaded process that forks
each ffmpeg, so the ~90 MB multi-threaded daemon never forks itself.

Run as a script with `python -I -S`. Its imports are kept to the few modules it needs: a
fork copies the process's page tables and CPython's fork hooks run in the child, so each
module imported here (threading above all, which re-initialises itself after a fork) made
every ffmpeg start slower: the helper that lived in spawn.py, with threading, subprocess and
typing loaded, took 1.3 ms from fork to exec, this one ~0.6 ms (bench/spool_trace.py).

Protocol and guarantees: spooler/spawn.py.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import select
import signal
import socket
import sys

TYPE_CHECKING = False  # typing itself is not imported: see above
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_FDS = 64
MAX_MESSAGE = 256 * 1024  # an inline graph (< 128 KiB) plus smart's drop lists (< ~100 KB)

_PR_SET_PDEATHSIG = 1


def _child(
    argv: list[str],
    nice: int,
    fds: list[int],
    targets: list[int],
    err_w: int,
    prctl: Callable[..., int],
) -> None:
    """In the forked child: exec `argv`, or report errno on `err_w` and exit. Never returns."""
    helper = os.getppid()
    err = err_w
    try:
        os.setsid()
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != helper:
            os._exit(127)  # the helper died before the signal was armed
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        if nice:
            os.nice(nice)
        # Move everything we keep above every number in use, then onto the targets.
        low = max([*targets, *fds, err_w]) + 1
        err = fcntl.fcntl(err_w, fcntl.F_DUPFD_CLOEXEC, low)
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low) for fd in fds]
        for fd, target in zip(moved, targets, strict=True):
            os.dup2(fd, target)  # inheritable
        for fd in range(max(targets) + 1):
            if fd not in targets:
                try:  # noqa: SIM105 (contextlib is not imported here: see above)
                    os.close(fd)
                except OSError:
                    pass
        os.closerange(max(targets) + 1, err)
        os.closerange(err + 1, MAX_FD_NUMBER)
        os.execv(argv[0], argv)  # noqa: S606 (an argv list, never a shell)
    except Exception as exc:  # reported as the exec's failure, whatever it was
        number = getattr(exc, "errno", None) or 0
        os.write(err, f"{number}\n{getattr(exc, 'strerror', None) or exc}".encode())
    finally:
        os._exit(127)


MAX_FD_NUMBER = 1 << 20


def _helper_main(sock_fd: int) -> None:
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())

    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            reap()
        if sock.fileno() not in ready:
            continue
        fds: list[int] = []
        try:
            data, ancdata, flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * MAX_FDS))
        except OSError:
            data, ancdata, flags = b"", [], 0
        for level, kind, payload in ancdata if data else []:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
                fds += list(got)
        if not data:
            # The daemon is gone (exit or kill -9): its ffmpeg must not outlive it.
            for pid in children:
                try:  # noqa: SIM105
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)
        msg = json.loads(data)
        if flags & socket.MSG_CTRUNC or len(fds) != len(msg["targets"]):
            # Descriptors lost on the way (more than MAX_FDS): nothing to start them with.
            for fd in fds:
                os.close(fd)
            reply = {"id": msg["id"], "errno": errno.E2BIG, "message": "descriptors truncated"}
            sock.send(json.dumps(reply).encode())
            continue
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            targets = [int(t) for t in msg["targets"]]
            _child(msg["argv"], int(msg["nice"]), fds, targets, err_w, prctl)
        os.close(err_w)
        for fd in fds:
            os.close(fd)
        failure = b""
        while chunk := os.read(err_r, 4096):  # EOF at the child's exec (close-on-exec)
            failure += chunk
        os.close(err_r)
        if failure:
            os.waitpid(pid, 0)
            number, _, text = failure.decode(errors="replace").partition("\n")
            reply = {"id": msg["id"], "errno": int(number), "message": text}
        else:
            children.add(pid)
            reply = {"id": msg["id"], "pid": pid}
        sock.send(json.dumps(reply).encode())
        reap()  # a child may have exited before it was in `children`


if __name__ == "__main__":
    _helper_main(int(sys.argv[1]))
