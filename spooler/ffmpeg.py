"""Running ffmpeg: find the binary, start it in its own process group, follow its progress,
and stop it (one SIGTERM to the group, a grace period, SIGKILL, always reaped)."""

from __future__ import annotations

import codecs
import collections
import contextlib
import ctypes
import functools
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from spooler.errors import ErrorCode, JobCancelled, JobError
from spooler.progress import out_time_seconds, parse_progress_line
from spooler.spawn import SpawnedProcess, spawn

# A helper-started ffmpeg (spawn.py: the fast path) or a subprocess one (the fallback).
Process = subprocess.Popen[bytes] | SpawnedProcess

GLOBAL_ARGS = [
    "-hide_banner",
    "-nostdin",
    "-y",
    "-loglevel",
    "level+warning",
    "-progress",
    "pipe:1",
    "-nostats",
]
STDERR_TAIL_LINES = 30
# What ffmpeg logs when a probe is refused its decoder by an empty codec allow-list (an
# error, then a warning, for each stream of each such file): ffconcat entries that must not
# decode a frame to be probed ask for that on purpose (ffconcat.ConcatList.probe), so these
# lines are neither logged nor kept for an error message.
REFUSED_PROBE = (
    "not on whitelist 'none'",
    "Failed to open codec in avformat_find_stream_info",
)
REPEATED = re.compile(r"Last message repeated \d+ times$")


class RefusalFilter:
    """Drops REFUSED_PROBE lines, and ffmpeg's "Last message repeated N times" after one."""

    def __init__(self) -> None:
        self.after_refusal = False

    def drops(self, line: str) -> bool:
        dropped = line.endswith(REFUSED_PROBE) or (
            self.after_refusal and REPEATED.search(line) is not None
        )
        self.after_refusal = dropped
        return dropped


def find_ffmpeg(configured: str | None) -> str:
    """The configured binary, else ffmpeg on PATH, else the one in the imageio-ffmpeg wheel."""
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise JobError(
                ErrorCode.FFMPEG_MISSING, f"ffmpeg_path {configured!r} is not executable"
            )
        return found
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise JobError(
            ErrorCode.FFMPEG_MISSING, "no ffmpeg on PATH and no imageio-ffmpeg binary"
        ) from exc


def ffmpeg_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "-hide_banner", "-version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("ffmpeg version ").split(" ")[0]


# The first ffmpeg that takes a bitstream filter on an input (-bsf:v before -i).
INPUT_BSF_MAJOR = 7


def ffmpeg_major(binary: str) -> int | None:
    """The major version `binary` reports ("7.1.1", "n9.0.2-17-g..."); None for a build
    that names none (a git snapshot). OSError / SubprocessError if it does not run."""
    found = re.match(r"n?(\d+)\.", ffmpeg_version(binary))
    return int(found.group(1)) if found else None


def drops_input_packets(binary: str) -> bool:
    """Can `binary` drop chosen packets of an input before decoding them (the warm-ups of
    smart render and the reencode, export/warmup.py): ffmpeg 7 or later, built with the
    `noise` bitstream filter. A probe that fails (a timeout) says no for this job and is
    tried again on the next."""
    try:
        return _drops_input_packets(binary)
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache  # once per binary: two short runs of it
def _drops_input_packets(binary: str) -> bool:
    major = ffmpeg_major(binary)
    if major is None or major < INPUT_BSF_MAJOR:
        return False
    listed = subprocess.run(
        [binary, "-hide_banner", "-bsfs"], capture_output=True, text=True, timeout=10, check=True
    )
    return "noise" in listed.stdout.split()


@dataclass
class FfmpegResult:
    returncode: int
    stderr_tail: list[str]
    out_time_seconds: float


@dataclass
class _Progress:
    """What the progress reader has seen, shared with the supervising loop."""

    last_advance: float  # time.monotonic() of the last forward step
    media_time: float = 0.0
    speed: float | None = None


@dataclass
class Limits:
    deadline: float | None  # time.monotonic() value at which the job times out
    stall_seconds: float
    kill_grace_seconds: float
    nice: int


_PR_SET_PDEATHSIG = 1


def _child_setup(nice: int) -> Callable[[], None]:
    """Runs in the child before exec: lower its priority, and have the kernel SIGKILL it if
    the daemon thread that started it dies (kill -9 of the daemon leaves no orphan ffmpeg)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def apply() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if nice:
            os.nice(nice)

    return apply


def stop_process_group(proc: Process, grace: float) -> None:
    """One SIGTERM to the whole group, then SIGKILL after `grace`; always reap.

    Only one SIGTERM: ffmpeg treats a fourth signal as "exit now without finishing".
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Children that outlived the leader (none for ffmpeg, but be thorough).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _classify_failure(returncode: int, tail: list[str]) -> JobError:
    text = "\n".join(tail)
    details = {"returncode": returncode, "stderrTail": tail[-10:]}
    if "No space left on device" in text:
        return JobError(ErrorCode.DISK_FULL, "no space left on device while writing", details)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return JobError(ErrorCode.FFMPEG_KILLED, f"ffmpeg was killed by {name}", details)
    last = tail[-1] if tail else "no error output"
    return JobError(ErrorCode.FFMPEG_FAILED, f"ffmpeg exited with {returncode}: {last}", details)


def run_ffmpeg(
    binary: str,
    args: list[str],
    *,
    expected_seconds: float,
    limits: Limits,
    log: IO[str],
    on_progress: Callable[[float, float | None], None],
    cancelled: Callable[[], bool],
    stopping: Callable[[], bool] = lambda: False,
    on_start: Callable[[int], None] = lambda pid: None,
    poll_seconds: float = 0.1,
    pass_fds: tuple[int, ...] = (),
) -> FfmpegResult:
    """Run one ffmpeg command to completion or raise JobError / JobCancelled.

    `on_progress(fraction, speed)` is called from this thread as progress lines arrive.
    `stopping()` true means the daemon is shutting down: ffmpeg is stopped and
    DaemonStopping is raised by the caller's check.
    """
    argv = [binary, *GLOBAL_ARGS, *args]
    log.write("$ " + " ".join(_quote(a) for a in argv) + "\n")
    log.flush()
    proc = _start(argv, limits.nice, pass_fds)
    on_start(proc.pid)
    log.write(f"# ffmpeg pid {proc.pid}\n")
    log.flush()
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    state = _Progress(last_advance=time.monotonic())

    # Refused probes happen only in a command that reads ffconcat lists.
    quiet = RefusalFilter() if "concat" in args else None

    def on_stderr(lines: list[str]) -> None:
        for line in lines:
            if quiet is not None and quiet.drops(line):
                continue
            tail.append(line)
            log.write(line + "\n")
        log.flush()

    def on_stdout(lines: list[str]) -> None:
        for line in lines:
            parsed = parse_progress_line(line)
            if parsed is None:
                continue
            key, value = parsed
            reached = out_time_seconds(key, value)
            if reached is not None and reached > state.media_time:
                state.media_time = reached
                state.last_advance = time.monotonic()
                fraction = reached / expected_seconds if expected_seconds > 0 else 0.0
                on_progress(min(1.0, fraction), state.speed)
            elif key == "speed" and value.endswith("x"):
                with contextlib.suppress(ValueError):
                    state.speed = float(value[:-1])

    # Both pipes are read here, in the job's own thread (no reader threads: starting and
    # joining two threads per ffmpeg, and each line's hand-over, cost milliseconds a job
    # on a busy machine), and their end of file is the first sign that ffmpeg exited.
    assert proc.stdout is not None and proc.stderr is not None
    pipes = _Pipes({proc.stdout.fileno(): on_stdout, proc.stderr.fileno(): on_stderr})
    reason: JobError | None = None
    exit_watch = _ExitWatch(proc)
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if cancelled():
                reason = JobCancelled()
            elif stopping():
                reason = JobError(ErrorCode.INTERNAL, "daemon stopping")
            elif limits.deadline is not None and now >= limits.deadline:
                reason = JobError(ErrorCode.TIMEOUT, "the job ran past its time limit")
            elif now - state.last_advance > limits.stall_seconds:
                reason = JobError(
                    ErrorCode.STALLED,
                    f"ffmpeg made no progress for {limits.stall_seconds:g} s",
                )
            if reason is not None:
                log.write(f"# stopping ffmpeg: {reason.message}\n")
                stop_process_group(proc, limits.kill_grace_seconds)
                break
            if pipes.open:
                pipes.read(poll_seconds)
            else:
                exit_watch.wait(poll_seconds)
    except BaseException:
        stop_process_group(proc, limits.kill_grace_seconds)
        raise
    finally:
        if proc.poll() is None:
            stop_process_group(proc, limits.kill_grace_seconds)
        pipes.drain(timeout=5.0)  # what ffmpeg wrote before it exited
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        exit_watch.close()
    if reason is not None:
        raise reason
    lines = list(tail)
    code = proc.wait()  # already exited: the code at once
    if code != 0:
        raise _classify_failure(code, lines)
    return FfmpegResult(code, lines, state.media_time)


class _Pipes:
    """ffmpeg's stdout and stderr, read without blocking and handed over in whole lines."""

    def __init__(self, handlers: dict[int, Callable[[list[str]], None]]) -> None:
        self._handlers = handlers
        self._partial = {fd: "" for fd in handlers}
        self._decoders = {
            fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in handlers
        }
        self._poll = select.poll()
        for fd in handlers:
            self._poll.register(fd, select.POLLIN)

    @property
    def open(self) -> bool:
        return bool(self._handlers)

    def read(self, timeout: float) -> None:
        """Wait up to `timeout` for output; hand over the complete lines that came."""
        for fd, _events in self._poll.poll(timeout * 1000):
            chunk = os.read(fd, 65536)  # readable: returns at once (b"" at the end)
            final = not chunk
            text = self._partial[fd] + self._decoders[fd].decode(chunk, final=final)
            *lines, self._partial[fd] = text.split("\n")
            if final and self._partial[fd]:
                lines.append(self._partial[fd])
            handler = self._handlers[fd]
            if final:
                self._poll.unregister(fd)
                del self._handlers[fd]
            if lines:
                handler(lines)

    def drain(self, timeout: float) -> None:
        """Read to the end of both pipes, for at most `timeout` (a process that kept a copy
        of them open must not hold the job forever)."""
        deadline = time.monotonic() + timeout
        while self._handlers and (left := deadline - time.monotonic()) > 0:
            self.read(left)


def _start(argv: list[str], nice: int, pass_fds: tuple[int, ...]) -> Process:
    """Through the spawn helper (cheap), else subprocess with a preexec_fn, which forks
    the whole daemon (see spawn.py for the figures)."""
    spawned = spawn(argv, nice=nice, pass_fds=pass_fds)
    if spawned is not None:
        return spawned
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_child_setup(nice),
        close_fds=True,
        pass_fds=pass_fds,
    )


class _ExitWatch:
    """Wait up to a timeout, returning the moment the process exits. A pidfd wakes us
    exactly; Popen.wait(timeout) polls with sleeps of up to 50 ms (a gap after every run).
    A helper-started process is waited for on the helper's exit message instead."""

    def __init__(self, proc: Process) -> None:
        self._spawned = proc if isinstance(proc, SpawnedProcess) else None
        try:
            self._fd: int | None = None if self._spawned else os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._fd = None

    def wait(self, timeout: float) -> None:
        if self._spawned is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._spawned.wait(timeout)
        elif self._fd is None:
            time.sleep(timeout)
        else:
            select.select([self._fd], [], [], timeout)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=,+@%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
