"""The spawn helper (spooler/spawn.py starts it): a tiny single-threaded process that starts
each ffmpeg, so the ~90 MB multi-threaded daemon never forks itself.

Run as a script with `python -I -S`, its imports kept to the few modules it needs (it starts
in tens of milliseconds). It starts ffmpeg with `posix_spawn` (a vfork in glibc: no page
tables copied, no Python run in the child), ~0.6 ms to the exec against ~1.3 ms for the
fork and the Python set-up in the child that it replaced (bench/spool_trace.py, issue 18).
posix_spawn runs no code of ours in the child, so what a child used to set there comes
from elsewhere: its session from `setsid`, its nice value from the helper's own (a child
inherits it), its death with the daemon from the helper or, if the helper is killed, from
the daemon (spooler/spawn.py).

Protocol and guarantees: spooler/spawn.py.
"""

from __future__ import annotations

import array
import errno
import json
import os
import select
import signal
import socket
import sys

MAX_FDS = 64
MAX_MESSAGE = 256 * 1024  # an inline graph (< 128 KiB) plus smart's drop lists (< ~100 KB)

# Reset to their defaults in ffmpeg, as subprocess does: the helper ignores SIGINT (a Ctrl-C
# of the daemon's terminal is the daemon's to handle), Python ignores SIGPIPE and SIGXFSZ.
_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ)


def _spawn(argv: list[str], fds: list[int], targets: list[int]) -> int:
    """Start `argv` in its own session with `fds` at the numbers `targets` and nothing
    else of ours: everything the helper holds is close-on-exec. Raises OSError as exec."""
    # Move them above every number in use first, so that no move overwrites a source.
    low = max([*targets, *fds]) + 1
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, fd, low + i) for i, fd in enumerate(fds)
    ]
    actions += [(os.POSIX_SPAWN_DUP2, low + i, target) for i, target in enumerate(targets)]
    actions += [(os.POSIX_SPAWN_CLOSE, low + i) for i in range(len(fds))]
    return os.posix_spawn(
        argv[0],
        argv,
        os.environ,
        file_actions=actions,
        setsid=True,
        setsigdef=_DEFAULT_SIGNALS,
    )


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds += list(got)
    return fds


def _helper_main(sock_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.set_inheritable(sock_fd, False)  # no ffmpeg may hold it: its EOF is the helper's end
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    niced = 0  # what the helper added to the nice value it started with; ffmpeg inherits it

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
        try:
            # Close-on-exec as they arrive: a descriptor meant for one ffmpeg never leaks
            # into another.
            data, ancdata, flags, _addr = sock.recvmsg(
                MAX_MESSAGE, socket.CMSG_SPACE(4 * MAX_FDS), socket.MSG_CMSG_CLOEXEC
            )
        except OSError:
            data, ancdata, flags = b"", [], 0
        fds = _received_fds(ancdata) if data else []
        if not data:
            # The daemon is gone (exit or kill -9): its ffmpeg must not outlive it.
            for pid in children:
                try:  # noqa: SIM105 (contextlib is not imported here: see above)
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)
        msg = json.loads(data)
        nice = int(msg["nice"])
        if flags & socket.MSG_CTRUNC or len(fds) != len(msg["targets"]):
            # Descriptors lost on the way (more than MAX_FDS): nothing to start them with.
            reply = {"id": msg["id"], "errno": errno.E2BIG, "message": "descriptors truncated"}
        elif nice < niced:
            # A nice value cannot be lowered without privilege (spawn.py never asks).
            reply = {"id": msg["id"], "errno": errno.EPERM, "message": "nice below the helper's"}
        else:
            # `nice` is an increment over the daemon's own, as os.nice(nice) in a child was.
            if nice > niced:
                os.nice(nice - niced)
                niced = nice
            try:
                pid = _spawn(msg["argv"], fds, [int(t) for t in msg["targets"]])
            except OSError as exc:
                message = exc.strerror or str(exc)
                reply = {"id": msg["id"], "errno": exc.errno or 0, "message": message}
            else:
                children.add(pid)
                reply = {"id": msg["id"], "pid": pid}
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps(reply).encode())
        reap()  # a child may have exited before it was in `children`


if __name__ == "__main__":
    _helper_main(int(sys.argv[1]))
