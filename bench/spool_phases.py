"""Where the spool's fixed cost per job goes (issue 18): a per-phase breakdown.

    .venv/bin/python bench/spool_phases.py            # 100 trivial jobs, max_jobs 1
    .venv/bin/python bench/spool_phases.py --jobs 40 --no-spy

A real `spooler run` takes a burst of trivial testpattern jobs (max_jobs 1, as
spool_bench's overhead bench). Two views, both steady on a loaded machine:

- CPU: the daemon's own CPU time per job (utime + stime of the daemon process, ffmpeg's
  excluded), and ffmpeg's (the children's), from /proc; compared with the same ffmpeg
  commands run back to back by a shell loop (its CPU, and its wall time).
- Wall, by phase: py-spy samples every thread of the daemon (idle samples included, so
  the figures are wall time) and each sample is filed under the first phase its stack
  shows (the table below). Per job: the job thread's time outside ffmpeg (spawn, verify,
  status writes, publish), and the loop's time from a rename to the job's thread start.

Needs py-spy (`pip install py-spy`, in the project's `bench` extra) for the wall view.
Results: bench/results/spool_phases.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spool_bench import (
    RESULTS_DIR,
    argv_from_job_log,
    bench_shell_loop,
    burst,
    cpu_seconds,
    load_average,
    parse_ts,
    read_json,
    run_one,
    running_daemon,
)

# (phase, function names any of which in a stack puts the sample there), first match wins,
# searched from the innermost frame outwards. py-spy names frames "Class.method (file:line)".
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("ffmpeg spawn (spawn + exec)", ("Popen.__init__", "Spawner.spawn")),
    ("publish (fsync, journal, rename)", ("RunContext.publish",)),
    ("status writes", ("Reporter.write",)),  # progress too, written while ffmpeg runs
    ("ffmpeg running (waiting for its exit)", ("_ExitWatch.wait", "_Pipes.read")),
    ("ffmpeg pipes and reader threads", ("Thread.join", "run_ffmpeg")),
    ("output verification (PyAV)", ("verify_media",)),
    ("claim + establish", ("InboxIntake.take",)),
    ("reap, slots, start", ("Daemon.step",)),
    ("idle wait", ("Event.wait",)),
]


def classify(stack: list[str]) -> str:
    """`stack` innermost first, as 'Class.function (file:line)' strings."""
    names = [frame.split(" (", 1)[0] for frame in stack]
    for phase, funcs in PHASES:
        if any(name in funcs for name in names):
            return phase
    return "other"


def innermost_spooler(stack: list[str]) -> str:
    for frame in stack:
        if "spooler/" in frame:
            return frame
    return stack[0] if stack else "?"


def parse_raw(path: Path, rate: int) -> dict[str, Any]:
    """py-spy --format raw: 'thread (tid): name;frame;frame... count', outermost first.
    Returns seconds per thread kind (job / main loop) and phase, and the job threads'
    top functions outside ffmpeg's run."""
    found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    spots: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = head.split(";")
        thread, stack = frames[0], list(reversed(frames[1:]))
        name = thread.split(": ", 1)[-1]
        kind = (
            "job thread"
            if name.startswith("job-")
            else ("main loop" if name == "MainThread" else None)
        )
        if kind is None:
            continue  # watchdog's and the heartbeat's threads: they wait
        phase = classify(stack)
        seconds = int(count) / rate
        found[kind][phase] += seconds
        if kind == "job thread" and phase != "ffmpeg running (waiting for its exit)":
            spots[innermost_spooler(stack)] += seconds
    return {
        "phases": {k: dict(v) for k, v in found.items()},
        "job_thread_top": spots.most_common(15),
    }


def burst_of(spool: Path, jobs: int) -> tuple[float, list[str]]:
    ids = [f"burst-{i:05d}" for i in range(jobs)]
    return burst(spool, ids), ids


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rfind(")") + 2 :].split()


def children_cpu(pid: int) -> float:
    """CPU of the daemon's reaped children (ffmpeg), with the spawn helper's own
    (spooler/spawn_helper.py: it starts ffmpeg, so ffmpeg's time is the helper's children's)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = _stat_fields(pid)
    total = (int(fields[13]) + int(fields[14])) / tick
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_helper.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                f = _stat_fields(int(child))
                total += sum(int(v) for v in f[11:15]) / tick
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--no-spy", action="store_true", help="CPU view only")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument(
        "--cpu", action="store_true", help="sample only the thread holding the GIL: Python CPU"
    )
    parser.add_argument(
        "--no-helper", action="store_true", help="ffmpeg through subprocess (the old way)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "spool_phases.json")
    args = parser.parse_args(argv)
    spy = (
        None
        if args.no_spy
        else shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    )
    if spy and not Path(spy).exists():
        spy = None
    root = Path(tempfile.mkdtemp(prefix="spool-phases-"))
    result: dict[str, Any] = {"jobs": args.jobs, "load_before": load_average()}
    try:
        spool = root / "spool"
        env = {"SPOOLER_MAX_JOBS": "1"} | ({"SPOOLER_SPAWN_HELPER": "0"} if args.no_helper else {})
        result["spawn"] = "subprocess" if args.no_helper else "helper"
        with running_daemon(spool, **env) as daemon:
            run_one(spool, "warmup")
            cpu0, child0 = cpu_seconds(daemon.pid), children_cpu(daemon.pid)
            raw = root / "spy.txt"
            recorder = None
            if spy:
                recorder = subprocess.Popen(
                    [spy, "record", "--pid", str(daemon.pid), "--threads",
                     "--gil" if args.cpu else "--idle",
                     "--format", "raw", "--rate", str(args.rate), "--nonblocking",
                     "--output", str(raw)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)  # attached
            t0, ids = burst_of(spool, args.jobs)
            cpu1, child1 = cpu_seconds(daemon.pid), children_cpu(daemon.pid)
            if recorder:
                recorder.send_signal(2)
                recorder.wait(timeout=60)
        statuses = [read_json(spool / "jobs" / j / "status.json") or {} for j in ids]
        t_end = max(parse_ts(s["finishedAt"]) for s in statuses)
        argvs = [argv_from_job_log(spool / "jobs" / j / "job.log") for j in ids]
        before = os.times()
        loop = bench_shell_loop(root, argvs)
        after = os.times()
        loop_cpu = after.children_user + after.children_system
        loop_cpu -= before.children_user + before.children_system
        n = args.jobs
        result |= {
            "daemon_wall_s": round(t_end - t0, 3),
            "loop_wall_s": loop["loop_seconds"],
            "wall_ratio": round((t_end - t0) / loop["loop_seconds"], 3),
            "extra_wall_ms_per_job": round(((t_end - t0) - loop["loop_seconds"]) / n * 1e3, 1),
            "daemon_cpu_ms_per_job": round((cpu1 - cpu0) / n * 1e3, 2),
            "ffmpeg_cpu_ms_per_job_daemon": round((child1 - child0) / n * 1e3, 2),
            "ffmpeg_cpu_ms_per_job_loop": round(loop_cpu / n * 1e3, 2),
            "load_after": load_average(),
        }
        if spy and raw.exists():
            parsed = parse_raw(raw, args.rate)
            result["wall_ms_per_job_by_thread_and_phase"] = {
                kind: {p: round(s / n * 1e3, 2) for p, s in sorted(v.items(), key=lambda i: -i[1])}
                for kind, v in parsed["phases"].items()
            }
            result["job_thread_top_ms_per_job"] = [
                (where, round(s / n * 1e3, 2)) for where, s in parsed["job_thread_top"]
            ]
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
