"""The spawn helper (spooler/spawn.py): real processes, no mocks.

What ffmpeg gets from it must match what subprocess with a preexec_fn gave: its own
session, the nice value, exactly stdin/stdout/stderr plus the passed fds at their own
numbers, an OSError when the binary is missing, and death with the daemon (kill -9) or
with the helper.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spooler.spawn import SpawnedProcess, Spawner


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    made = Spawner()
    yield made
    made.close()


def _drain(proc: SpawnedProcess) -> tuple[str, str]:
    assert proc.stdout is not None and proc.stderr is not None
    with proc.stdout, proc.stderr:
        return proc.stdout.read().decode(), proc.stderr.read().decode()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pid: int, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid), f"{pid} outlived its parent"


def test_child_gets_its_session_nice_and_exactly_the_passed_fds(
    tmp_path: Path, spawner: Spawner
) -> None:
    # Given a readable file whose fd is passed (sources are read as /proc/self/fd/N)
    source = tmp_path / "source.txt"
    source.write_text("frames\n")
    fd = os.open(source, os.O_RDONLY)
    try:
        script = (
            f"cat /proc/self/fd/{fd}; "
            "for f in /proc/self/fd/*; do echo fd ${f##*/}; done; "
            "cut -d' ' -f6,19 /proc/self/stat; echo pid $$; echo err >&2"
        )
        # When the helper starts a shell with nice 7
        proc = spawner.spawn(["/bin/sh", "-c", script], nice=7, pass_fds=(fd,))
        assert proc is not None
        out, err = _drain(proc)
        code = proc.wait(timeout=10)
    finally:
        os.close(fd)
    # Then it read the passed fd, has its own session, the nice value, and no other fd
    # (the shell's glob opens one more: the directory it lists)
    lines = out.splitlines()
    assert lines[0] == "frames"
    fds = {int(line.split()[1]) for line in lines if line.startswith("fd ")}
    assert {0, 1, 2, fd} <= fds and len(fds - {0, 1, 2, fd}) <= 1
    session, nice = (int(v) for v in lines[-2].split())
    assert lines[-1] == f"pid {proc.pid}" and session == proc.pid
    assert nice == 7
    assert err == "err\n" and code == 0


def test_exit_codes_and_a_missing_binary(spawner: Spawner) -> None:
    proc = spawner.spawn(["/bin/sh", "-c", "exit 3"], nice=0, pass_fds=())
    assert proc is not None and proc.wait(timeout=10) == 3
    _drain(proc)
    proc = spawner.spawn(["/bin/sh", "-c", "kill -TERM $$"], nice=0, pass_fds=())
    assert proc is not None and proc.wait(timeout=10) == -signal.SIGTERM
    _drain(proc)
    with pytest.raises(FileNotFoundError):
        spawner.spawn(["/nonexistent/ffmpeg"], nice=0, pass_fds=())
    slow = spawner.spawn(["/bin/sleep", "5"], nice=0, pass_fds=())
    assert slow is not None and slow.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        slow.wait(timeout=0.05)
    os.killpg(slow.pid, signal.SIGKILL)  # its own group, as stop_process_group expects
    assert slow.wait(timeout=10) == -signal.SIGKILL
    _drain(slow)


def test_children_die_with_a_killed_daemon(tmp_path: Path) -> None:
    # Given a process (standing in for the daemon) that started a long child via the helper
    code = textwrap.dedent(
        """
        import sys, time
        from spooler.spawn import Spawner
        proc = Spawner().spawn(["/bin/sleep", "60"], nice=0, pass_fds=())
        print(proc.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        assert _alive(child)
        # When the owner is killed with SIGKILL (no cleanup of its own)
        owner.kill()
        owner.wait()
        # Then its child dies too (the helper saw the socket close)
        _wait_dead(child)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


def test_children_die_with_a_killed_helper_and_spawning_falls_back(spawner: Spawner) -> None:
    proc = spawner.spawn(["/bin/sleep", "60"], nice=0, pass_fds=())
    assert proc is not None and spawner._helper is not None
    # When the helper itself is killed (say, by the OOM killer)
    spawner._helper.kill()
    spawner._helper.wait()
    # Then the daemon's side sees it gone at its next look (a job's thread polls its
    # ffmpeg), kills the child and reports it killed; the next spawn says "use
    # subprocess" instead of hanging
    assert proc.wait(timeout=5) == -signal.SIGKILL
    _wait_dead(proc.pid)
    _drain(proc)
    assert spawner.spawn(["/bin/true"], nice=0, pass_fds=()) is None


def test_nice_adds_to_a_niced_daemons_own_on_every_spawn() -> None:
    # Given a daemon that itself runs at nice 3 (say, systemd's Nice=3)
    code = textwrap.dedent(
        """
        import os
        from spooler.spawn import Spawner
        spawner = Spawner()
        for _ in range(2):
            proc = spawner.spawn(["/bin/sh", "-c", "cut -d' ' -f19 /proc/self/stat"],
                                 nice=5, pass_fds=())
            print(proc.stdout.read().decode().strip(), proc.wait(timeout=10), flush=True)
        spawner.close()
        """
    )
    # When it starts two children with ffmpeg_nice 5
    out = subprocess.run(
        ["nice", "-n", "3", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    # Then both run at 3 + 5, as os.nice(5) in the child gave
    assert out.stdout.splitlines() == ["8 0", "8 0"]


def test_a_spawn_that_finds_the_helper_dead_kills_its_children(spawner: Spawner) -> None:
    # Given a child, and then its helper killed while no thread was reading its socket
    proc = spawner.spawn(["/bin/sleep", "60"], nice=0, pass_fds=())
    assert proc is not None and spawner._helper is not None
    spawner._helper.kill()
    spawner._helper.wait()
    # When the next spawn finds it gone (its request cannot be sent)
    assert spawner.spawn(["/bin/true"], nice=0, pass_fds=()) is None
    # Then the child is killed there and then, not left to run on as an orphan
    _wait_dead(proc.pid)
    assert proc.wait(timeout=5) == -signal.SIGKILL
    _drain(proc)


def test_a_nice_below_the_helpers_starts_the_plain_way(spawner: Spawner) -> None:
    # Given a helper that started a child at nice 5 (each child inherits the helper's own)
    first = spawner.spawn(["/bin/true"], nice=5, pass_fds=())
    assert first is not None and first.wait(timeout=10) == 0
    _drain(first)
    # When a reload lowers ffmpeg_nice to 3: the helper cannot lower its own without
    # privilege, so that child starts the plain way (None: subprocess sets its nice)
    assert spawner.spawn(["/bin/true"], nice=3, pass_fds=()) is None
    # Then a higher one still goes through the helper, at its own value
    proc = spawner.spawn(["/bin/sh", "-c", "cut -d' ' -f19 /proc/self/stat"], nice=8, pass_fds=())
    assert proc is not None
    out, _err = _drain(proc)
    assert proc.wait(timeout=10) == 0 and int(out) == 8


def test_a_closed_spawner_starts_a_new_helper_on_the_next_spawn(spawner: Spawner) -> None:
    first = spawner.spawn(["/bin/true"], nice=0, pass_fds=())
    assert first is not None and first.wait(timeout=10) == 0
    _drain(first)
    helper = spawner._helper
    # When it is closed (the daemon's shutdown: the helper is reaped)
    spawner.close()
    assert helper is not None and helper.returncode is not None
    # Then the next spawn goes through a new helper, not the slow subprocess fallback
    again = spawner.spawn(["/bin/true"], nice=0, pass_fds=())
    assert again is not None and spawner._helper not in (None, helper)
    assert again.wait(timeout=10) == 0
    _drain(again)


def test_a_long_argv_goes_through_and_a_too_long_one_alone_falls_back(spawner: Spawner) -> None:
    # Given argument lists of 230 KB (over a socket's default send buffer, ~208 KB) and
    # 300 KB (over the helper's MAX_MESSAGE): the kernel allows 128 KiB an argument
    def argv(kilobytes: int) -> list[str]:
        return ["/bin/true", *["x" * 100_000] * (kilobytes // 100), "y" * (kilobytes % 100 * 1000)]

    long = spawner.spawn(argv(230), nice=0, pass_fds=())
    assert long is not None and long.wait(timeout=10) == 0
    _drain(long)
    # When one is too long for the helper: that one starts the plain way (None)...
    assert spawner.spawn(argv(300), nice=0, pass_fds=()) is None
    # ...and the helper still starts the next
    after = spawner.spawn(["/bin/true"], nice=0, pass_fds=())
    assert after is not None and after.wait(timeout=10) == 0
    _drain(after)


def test_more_descriptors_than_the_helper_takes_fall_back_alone(spawner: Spawner) -> None:
    # Given a request passing 62 descriptors (with stdin, stdout and stderr, one more than
    # the helper's MAX_FDS) and one passing 61
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(62)]
    try:
        # When they are spawned: the larger starts the plain way (None), never half-started
        assert spawner.spawn(["/bin/true"], nice=0, pass_fds=tuple(opened)) is None
        # ...and the helper takes the next, with all of its descriptors
        fits = spawner.spawn(["/bin/true"], nice=0, pass_fds=tuple(opened[:61]))
        assert fits is not None and fits.wait(timeout=10) == 0
        _drain(fits)
    finally:
        for fd in opened:
            os.close(fd)
