"""Starting ffmpeg cheaply: a small helper process starts it, not the daemon.

Why: with subprocess, ffmpeg's nice value needs a `preexec_fn`, which makes Python fork()
the whole daemon (~90 MB, several threads) and run Python in the child: ~11 ms of CPU and
10-45 ms of wall time per ffmpeg on this project's VM (bench/spool_phases.py). So the
daemon starts one tiny helper (spawn_helper.py run as a script: a few stdlib modules,
single-threaded, ~10 MB) and asks it to start each ffmpeg, which it does with posix_spawn
(a vfork: ~0.6 ms to the exec).

Guarantees kept:
- ffmpeg in its own session (a cancel signals its group), niced by `nice` over the daemon's
  own value (the helper raises its own by that much and ffmpeg inherits it; a smaller
  increment than the helper's, after a reload, is started the plain way), with the
  daemon's pipes as stdout/stderr and the same `pass_fds` numbers (sources are read as
  /proc/self/fd/N), and no other descriptor;
- ffmpeg dies with the daemon: the helper sees the daemon's end of their socket close (a
  kill -9 closes it too), SIGKILLs every group it started and exits. Should the helper
  die first (say, the OOM killer), the daemon sees its end close and SIGKILLs the groups
  it was told of. Only when both die at once (`pkill -9 -f spooler`) is an ffmpeg left to
  finish its temporary output on its own: it never publishes it (docs/protocol.md);
- an exec failure is reported as OSError, as subprocess does;
- anything wrong with the helper (cannot start, died) falls back to subprocess; so does
  one request too long for its socket (MAX_MESSAGE, or a smaller send buffer), or with
  more descriptors than it takes (MAX_FDS), alone.

Protocol (one SOCK_SEQPACKET socketpair, JSON messages):
  daemon -> helper  {"id", "argv", "nice", "targets"} + the fds (SCM_RIGHTS), in `targets` order
  helper -> daemon  {"id", "pid"} | {"id", "errno", "message"}, later {"exit": pid, "code": rc}
"""

from __future__ import annotations

import array
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from spooler import spawn_helper
from spooler.spawn_helper import MAX_FDS, MAX_MESSAGE


class SpawnedProcess:
    """The part of subprocess.Popen that spooler.ffmpeg uses, for a child the helper started."""

    def __init__(self, pid: int, stdout: IO[bytes], stderr: IO[bytes], spawner: Spawner) -> None:
        self.pid = pid
        self.stdout: IO[bytes] | None = stdout
        self.stderr: IO[bytes] | None = stderr
        self.returncode: int | None = None
        self._spawner = spawner

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._spawner.exit_code(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._spawner.exit_code(self.pid, timeout=timeout)
            if code is None:
                raise subprocess.TimeoutExpired(["ffmpeg"], timeout or 0)
            self.returncode = code
        return self.returncode


class Spawner:
    """The daemon's side: one helper per daemon process, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exited = threading.Condition()
        self._codes: dict[int, int] = {}
        self._replies: dict[int, dict[str, Any]] = {}
        self._sock: socket.socket | None = None
        self._helper: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._broken = False
        self._reading = False  # a thread is reading the helper's messages
        self._live: set[int] = set()  # started by the helper, not yet reported exited
        self._niced = 0  # what the helper added to its nice value: the most asked of it

    def _start(self) -> socket.socket | None:
        if self._sock is not None or self._broken:
            return self._sock
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A message must fit the sender's buffer whole (the default, ~208 KB, is below
        # MAX_MESSAGE); the kernel doubles what is asked, up to twice net.core.wmem_max.
        with contextlib.suppress(OSError):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        try:
            # No preexec_fn: a vfork, cheap. Its own session: a Ctrl-C of the daemon's
            # terminal must not kill the helper (the daemon drains its jobs first).
            self._helper = subprocess.Popen(
                [sys.executable, "-I", "-S", spawn_helper.__file__, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except OSError:
            self._broken = True
            ours.close()
            return None
        finally:
            theirs.close()
        self._sock = ours
        return ours

    def _wait_for(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Wait until `ready()` (checked under `_exited`), the helper is gone, or `timeout`.

        No reader thread: a waiting thread reads the helper's messages itself while no
        other thread does (the others wait on the condition), so a reply or an exit
        reaches the thread that wants it without a hand-over through a third thread (each
        hand-over cost a scheduling delay, milliseconds a job on a busy machine)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._exited:
            while not ready() and not self._broken:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self._reading:
                    if left == 0.0:
                        return
                    self._exited.wait(left)
                    continue
                self._reading = True
                self._exited.release()
                try:
                    data = self._receive(left)
                finally:
                    self._exited.acquire()
                    self._reading = False
                    self._exited.notify_all()  # another waiter may read now
                if data is None:
                    if left == 0.0:
                        return
                    continue
                if not data:
                    # The helper died (or was closed): kill what it started, report it
                    # killed, and start ffmpeg the plain way from now on.
                    self._broken = True
                    self._kill_live()
                    return
                msg = json.loads(data)
                if "exit" in msg:
                    self._codes[int(msg["exit"])] = int(msg["code"])
                    self._live.discard(int(msg["exit"]))
                else:
                    self._replies[int(msg["id"])] = msg
                    if "pid" in msg:
                        self._live.add(int(msg["pid"]))

    def _kill_live(self) -> None:
        """SIGKILL the groups of the helper's children that were alive at its last word.
        Each is its own session's leader, so its group id is its pid. Under `_exited`."""
        for pid in self._live:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        self._live.clear()

    def _receive(self, timeout: float | None) -> bytes | None:
        """One message from the helper; None if none came within `timeout`; b"" at its
        end (or when the socket was closed under us)."""
        sock = self._sock
        if sock is None:
            return b""
        try:
            waiting = select.poll()
            waiting.register(sock.fileno(), select.POLLIN)
            if not waiting.poll(None if timeout is None else timeout * 1000):
                return None
            return sock.recv(MAX_MESSAGE)
        except (OSError, ValueError):
            return b""

    def close(self) -> None:
        """Stop the helper (it kills what it started) and wait for it. The next spawn
        starts a new one (a second daemon run in the same process, a bench's next run)."""
        with self._lock:
            self._broken = True
            if self._sock is not None:
                # shutdown, not just close: a waiting thread may be reading the socket.
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                self._sock.close()
            if self._helper is not None:
                self._helper.wait()
        with self._exited:
            self._exited.notify_all()
        with self._lock:
            self._sock, self._helper, self._broken = None, None, False
            self._niced = 0

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        self._wait_for(lambda: pid in self._codes, timeout)
        with self._exited:
            if pid in self._codes:
                return self._codes.pop(pid)
            return -signal.SIGKILL if self._broken else None

    def warm_up(self) -> None:
        with self._lock:
            self._start()

    def spawn(
        self, argv: list[str], *, nice: int, pass_fds: tuple[int, ...]
    ) -> SpawnedProcess | None:
        """Start `argv` through the helper, or None if the helper is unavailable."""
        if len(pass_fds) + 3 > MAX_FDS:  # more descriptors than the helper takes
            return None
        with self._lock:
            if nice < self._niced:  # the helper cannot lower its own (a reload lowered it)
                return None
            sock = self._start()
            if sock is None or self._broken:
                return None
            self._next_id += 1
            request_id = self._next_id
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            devnull = os.open(os.devnull, os.O_RDONLY)
            try:
                fds = [devnull, out_w, err_w, *pass_fds]
                targets = [0, 1, 2, *pass_fds]
                body = json.dumps(
                    {"id": request_id, "argv": argv, "nice": nice, "targets": targets}
                ).encode()
                try:
                    if len(body) > MAX_MESSAGE:  # the helper reads no more than that
                        raise OSError(errno.EMSGSIZE, "request too long for the helper")
                    sock.sendmsg(
                        [body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    )
                    self._niced = max(self._niced, nice)
                except OSError as exc:
                    # Too long for the socket: this one ffmpeg starts the plain way, the
                    # helper stays for the next. Any other failure: the helper is gone.
                    self._broken = exc.errno != errno.EMSGSIZE
                    if self._broken:
                        with self._exited:
                            self._kill_live()
                    os.close(out_r)
                    os.close(err_r)
                    return None
            finally:
                for fd in (devnull, out_w, err_w):
                    os.close(fd)
        self._wait_for(lambda: request_id in self._replies, None)
        with self._exited:
            reply = self._replies.pop(request_id, None)
        if reply is None or "pid" not in reply:
            os.close(out_r)
            os.close(err_r)
            if reply is None:
                return None
            raise OSError(int(reply["errno"]), str(reply["message"]), argv[0])
        # Raw pipes: spooler.ffmpeg reads their fds and decodes whole lines itself.
        stdout = os.fdopen(out_r, "rb", buffering=0)
        stderr = os.fdopen(err_r, "rb", buffering=0)
        return SpawnedProcess(int(reply["pid"]), stdout, stderr, self)


_SPAWNER = Spawner()


def spawn(argv: list[str], *, nice: int, pass_fds: tuple[int, ...]) -> SpawnedProcess | None:
    """The process-wide helper's spawn (None: use subprocess instead)."""
    if os.environ.get("SPOOLER_SPAWN_HELPER", "1") == "0":
        return None
    return _SPAWNER.spawn(argv, nice=nice, pass_fds=pass_fds)


def warm_up() -> None:
    """Start the helper now, at the daemon's start, not at the first job's first ffmpeg:
    its Python start-up (tens of milliseconds, more on a loaded machine) would otherwise
    delay that job."""
    if os.environ.get("SPOOLER_SPAWN_HELPER", "1") != "0":
        _SPAWNER.warm_up()


def shutdown() -> None:
    """Stop the process-wide helper and reap it: afterwards RUSAGE_CHILDREN counts the
    ffmpeg it ran (benchmarks measure CPU and peak memory that way)."""
    _SPAWNER.close()
