"""CPU time of ffmpeg by component, from its named threads (issue 18's "where does it go").

ffmpeg 7+ names its threads after their job: `dec0:0:h264` (a decoder), `fc0` (a filter
graph), `enc0:0:libx264` (an encoder; x264's own worker threads inherit that name), `mux0:mp4`,
`dmx0:mov,mp4,m4a` (a demuxer). A sampler thread reads utime+stime of every thread of every
ffmpeg descended from this process (/proc/<pid>/task/<tid>/stat) every `period` seconds and
keeps each thread's last value, so threads that end early still count (up to one period).
CPU time, unlike wall time, is steady on a machine shared with other work.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> tuple[str, int, float] | None:
    """(comm, ppid, cpu seconds) of a /proc/<pid>[/task/<tid>]/stat file."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(Path("/proc", entry, "stat"))
            if found:
                parents[int(entry)] = found[1]
    out = []
    for pid in parents:
        seen, cur = 0, pid
        while cur in parents and seen < 64:
            cur, seen = parents[cur], seen + 1
            if cur == root:
                out.append(pid)
                break
    return out


def component(comm: str) -> str:
    """dec0:1:h264 -> decoders; enc1:0:libx264 -> encoder enc1:0:libx264; ..."""
    if comm.startswith("dec"):
        return "decoders"
    if comm.startswith("enc"):
        return f"encoder {comm}"
    if re.match(r"fc\d|fg\d", comm):
        return "filter graph"
    if comm.startswith("dmx"):
        return "demuxers"
    if comm.startswith("mux"):
        return "muxers"
    return "main and other"


class ThreadCpu:
    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.last: dict[tuple[int, int], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.own_cpu = 0.0

    def _sample(self) -> None:
        for pid in _descendants(os.getpid()):
            main = _stat(Path(f"/proc/{pid}/stat"))
            if main is None or not main[0].startswith("ffmpeg"):
                continue
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    found = _stat(Path(f"/proc/{pid}/task/{tid}/stat"))
                    if found:
                        self.last[(pid, int(tid))] = (found[0], found[2])

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()
        # The sampler's own CPU (listing /proc five times a second): the bench's, not the
        # measured job's; callers subtract it from their process's CPU time.
        self.own_cpu = time.thread_time()

    def by_component(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for comm, cpu in self.last.values():
            totals[component(comm)] += cpu
        return {k: round(v, 2) for k, v in sorted(totals.items())}

    def by_thread_name(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for comm, cpu in self.last.values():
            totals[comm] += cpu
        return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda i: -i[1])}

    @contextlib.contextmanager
    def running(self) -> Iterator[ThreadCpu]:
        self._thread.start()
        try:
            yield self
        finally:
            self._sample()
            self._stop.set()
            self._thread.join()
