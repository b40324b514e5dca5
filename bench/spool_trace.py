"""Where one job's milliseconds go on the daemon's side (issue 18): a timed trace.

    .venv/bin/python bench/spool_trace.py                # 100 trivial jobs, max_jobs 1
    .venv/bin/python bench/spool_trace.py --jobs 60 --keep

A real `spooler run` (this script, re-run as the daemon with `--daemon`) whose spool
functions are wrapped with timers before it starts: each call of the functions in HOOKS is
recorded (thread, start, end, a tag such as "durable"), and the time ffmpeg lived (the spawn
helper's reply with its pid, and its exit message). A burst of trivial testpattern jobs
(max_jobs 1, as spool_bench's overhead bench) goes through it; the trace is then cut into
the phases of each job; its period runs from the end of the previous job's final status
write to the end of its own:

    pick-up (the previous job's slot freed -> claim), claim + establish, load, thread start,
    running write, spawn, ffmpeg alive, after exit (readers, progress writes), verify,
    publish, final write

A job's slot is freed when it has encoded (JobContext.encoded, right after its ffmpeg): its
verify, publish and final write overlap the next job. A daemon alone on its spool claims the
next job ahead while the slot's ffmpeg runs (docs/protocol.md §3), so for such a job pick-up
and claim are off the critical path too, which is then: slot freed -> job thread runs, the
running write, spawn, ffmpeg alive.

A wrapper costs ~2 us a call; py-spy (spool_phases.py) costs far more and stretches short
phases. Counts per job: status writes (durable or not), fsyncs, heartbeats, inbox scans.
Same-run reference: the same ffmpeg commands in a shell loop (spool_bench.bench_shell_loop).
Results: bench/results/spool_trace.json.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import functools
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (module, attribute path) of every function timed. A function imported by name into
# another module is patched where it is used.
HOOKS: list[tuple[str, str]] = [
    ("spooler.daemon", "Daemon.step"),
    ("spooler.daemon", "Daemon._beat"),
    ("spooler.daemon", "Daemon._recover"),
    ("spooler.daemon", "Daemon._retention"),
    ("spooler.pool", "JobPool.reap"),
    ("spooler.pool", "JobPool.start"),
    ("spooler.pool", "JobPool._job_done"),
    ("spooler.intake.inbox", "InboxIntake.take"),
    ("spooler.intake.inbox", "InboxIntake._claimable"),
    ("spooler.intake.inbox", "scan_inbox"),
    ("spooler.intake.inbox", "InboxIntake._look_at"),
    ("spooler.intake.inbox", "InboxIntake._claim"),
    ("spooler.intake.inbox", "claim"),
    ("spooler.intake.inbox", "establish"),
    ("spooler.intake.inbox", "read_job"),
    ("spooler.pool", "run_attempt"),
    ("spooler.runner", "open_log_for_append"),
    ("spooler.runner", "run_ffmpeg"),
    ("spooler.runner", "RunContext.publish"),
    ("spooler.runner", "RunContext.declare_outputs"),
    ("spooler.runner", "RunContext.encoded"),
    ("spooler.report", "Reporter.write"),
    ("spooler.report", "Reporter.announce"),
    ("spooler.spawn", "Spawner.spawn"),
    ("spooler.kinds.testpattern", "verify_media"),
    ("spooler.storage", "JobFolderOutputs.make_durable"),
    ("spooler.storage", "JobFolderOutputs.commit"),
    ("spooler.fsutil", "atomic_write_bytes"),
    ("spooler.fsutil", "fsync_dir"),
    ("spooler.fsutil", "fsync_file"),
    ("spooler.spool", "fsync_dir"),
    ("spooler.storage", "fsync_dir"),
    ("spooler.storage", "fsync_file"),
    ("spooler.worker", "write_heartbeat"),
]

EVENTS: list[tuple[str, str, float, float, str]] = []  # name, thread, start, end, tag


# -- the daemon side ---------------------------------------------------------------------------
def _wrap(name: str, func: Any) -> Any:
    clock = time.perf_counter

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return func(*args, **kwargs)
        finally:
            if name == "run_attempt":  # the job thread's own CPU, readers excluded
                tag = str(time.thread_time())
            else:
                tag = "durable" if kwargs.get("durable", True) else "plain"
            EVENTS.append((name, threading.current_thread().name, t0, clock(), tag))

    return timed


class _TimedCodes(dict[int, int]):
    """The spawn helper's exit messages, stamped as they arrive."""

    def __setitem__(self, pid: int, code: int) -> None:
        now = time.perf_counter()
        EVENTS.append(("ffmpeg exit seen", threading.current_thread().name, now, now, str(pid)))
        super().__setitem__(pid, code)


def install_hooks() -> None:
    for module_name, path in HOOKS:
        module = importlib.import_module(module_name)
        owner: Any = module
        *parents, attr = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        label = path if module_name != "spooler.spool" else f"{path} (claim)"
        if hasattr(owner, attr):  # a design compared with (--compare) may lack it
            setattr(owner, attr, _wrap(label, getattr(owner, attr)))
    import spooler.spawn

    spooler.spawn._SPAWNER._codes = _TimedCodes()


def run_daemon(trace_file: Path) -> None:
    install_hooks()
    if threading.current_thread() is threading.main_thread():
        threading.main_thread().name = "MainThread"

    def dump() -> None:
        trace_file.write_text(json.dumps(EVENTS))

    atexit.register(dump)
    from spooler.cli import main as cli_main

    cli_main(["run"])


# -- the bench side ----------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_thread(pid: int) -> dict[str, float]:
    """utime+stime (s) of the process split as user/system, and of each live thread by name."""
    found: dict[str, float] = collections.defaultdict(float)
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rfind(")") + 2 :].split()
    found["process user"] = int(fields[11]) / TICK
    found["process system"] = int(fields[12]) / TICK
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rfind(")") + 2 :].split()
        found[f"thread {name}"] += (int(fields[11]) + int(fields[12])) / TICK
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if b"spawn_helper.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                raw = Path(f"/proc/{child}/stat").read_text()
                fields = raw[raw.rfind(")") + 2 :].split()
                found["spawn helper itself"] = (int(fields[11]) + int(fields[12])) / TICK
    return dict(found)


def job_of(thread: str) -> str | None:
    return thread.removeprefix("job-") if thread.startswith("job-") else None


def analyse(events: list[list[Any]], ids: list[str]) -> dict[str, Any]:
    """Per job, the critical path from the previous job's end to this job's end."""
    by_job: dict[str, list[list[Any]]] = collections.defaultdict(list)
    main: list[list[Any]] = []
    for ev in events:
        job = job_of(ev[1])
        (by_job[job] if job else main).append(ev)
    main.sort(key=lambda e: e[2])
    claims = [e for e in main if e[0] == "InboxIntake._claim"]
    starts = [e for e in main if e[0] == "JobPool.start"]
    phases: dict[str, list[float]] = collections.defaultdict(list)
    counts: dict[str, list[float]] = collections.defaultdict(list)
    prev_end: float | None = None
    # When the previous job's slot was freed: its encoded() call (its last ffmpeg ended;
    # checks and publish go on beside the next job), else its final status write.
    prev_free: float | None = None
    for index, job_id in enumerate(ids):
        evs = sorted(by_job.get(job_id, []), key=lambda e: e[2])
        if not evs:
            continue
        attempt = next(e for e in evs if e[0] == "run_attempt")
        thread_start = attempt[2]
        # The claim and thread start on the loop that belong to this job.
        claim = max((c for c in claims if c[2] <= thread_start), key=lambda c: c[2])
        start = max((s for s in starts if s[2] <= thread_start), key=lambda s: s[2])
        writes = [e for e in evs if e[0] == "Reporter.write"]
        first_write, final_write = writes[0], writes[-1]
        spawn = next(e for e in evs if e[0] == "Spawner.spawn")
        ffmpeg = next(e for e in evs if e[0] == "run_ffmpeg")
        exit_seen = next(
            (e[2] for e in events if e[0] == "ffmpeg exit seen" and spawn[2] <= e[2] <= ffmpeg[3]),
            ffmpeg[3],
        )
        verify = next(e for e in evs if e[0] == "verify_media")
        publish = next(e for e in evs if e[0] == "RunContext.publish")
        ahead = prev_free is not None and claim[3] <= prev_free
        counts["claimed ahead of the slot (share of jobs)"].append(1.0 if ahead else 0.0)
        if prev_free is not None and not ahead:
            in_loop = [e for e in main if prev_free <= e[2] and e[3] <= claim[2]]
            phases["1 pick-up: previous job's slot freed -> claim starts"].append(
                claim[2] - prev_free
            )
            phases["  of which take()'s inbox pass before the claim"].append(
                sum(e[3] - e[2] for e in in_loop if e[0] in ("scan_inbox", "InboxIntake._look_at"))
            )
            phases["  of which heartbeat, recovery, retention"].append(
                sum(
                    e[3] - e[2]
                    for e in in_loop
                    if e[0] in ("Daemon._beat", "Daemon._recover", "Daemon._retention")
                )
            )
        establish = [e for e in main if e[0] == "establish" and claim[2] <= e[2] <= claim[3]]
        load = [e for e in main if e[0] == "read_job" and claim[2] <= e[2] <= claim[3]]
        phases["2 claim: rename, load, establish (fsyncs), announce"].append(claim[3] - claim[2])
        phases["  of which load + validate (read_job)"].append(sum(e[3] - e[2] for e in load))
        phases["  of which establish (staging, status, renames, fsyncs)"].append(
            sum(e[3] - e[2] for e in establish)
        )
        if ahead:
            assert prev_free is not None
            phases["3 claimed ahead: previous job's slot freed -> job thread runs"].append(
                thread_start - prev_free
            )
        else:
            phases["3 claim end -> job thread runs"].append(thread_start - claim[3])
        phases["  of which JobPool.start (thread start)"].append(start[3] - start[2])
        phases["4 job thread start -> spawn (log, running write, plan)"].append(
            spawn[2] - thread_start
        )
        phases["  of which the running status write"].append(first_write[3] - first_write[2])
        phases["5 spawn (helper round trip: spawn + exec)"].append(spawn[3] - spawn[2])
        phases["6 ffmpeg alive (pid reply -> exit message)"].append(exit_seen - spawn[3])
        phases["7 exit -> run_ffmpeg returns (readers, progress writes)"].append(
            ffmpeg[3] - exit_seen
        )
        phases["8 run_ffmpeg -> verify starts"].append(verify[2] - ffmpeg[3])
        phases["9 verification (PyAV), reported apart"].append(verify[3] - verify[2])
        phases["10 publish (fsync, journal write, rename, fsync dir)"].append(
            publish[3] - publish[2]
        )
        phases["11 final status write (durable)"].append(final_write[3] - final_write[2])
        phases["12 rest of the job thread"].append(
            final_write[2] - publish[3] + attempt[3] - final_write[3]
        )
        counts["status writes, durable"].append(
            sum(1 for e in writes if e[4] == "durable")
            + len(establish)  # the claim's first status, written in the staging folder
        )
        counts["status writes, not durable"].append(sum(1 for e in writes if e[4] == "plain"))
        counts["fsync of a file"].append(
            sum(1 for e in evs if e[0] == "fsync_file")
            + sum(1 for e in evs if e[0] == "atomic_write_bytes" and e[4] == "durable")
            + len(establish)
        )
        counts["fsync of a folder"].append(
            sum(1 for e in evs if e[0].startswith("fsync_dir"))
            + sum(1 for e in main if e[0].startswith("fsync_dir") and claim[2] <= e[2] <= claim[3])
        )
        counts["job thread CPU ms (readers excluded)"].append(
            (float(attempt[4]) if attempt[4][:1].isdigit() else 0.0) * 1e3
        )
        if prev_end is not None:
            phases["= job period (previous end -> this end)"].append(final_write[3] - prev_end)
        prev_end = final_write[3]
        freed = next((e for e in evs if e[0] == "RunContext.encoded"), None)
        prev_free = freed[2] if freed is not None else final_write[3]
        if freed is not None:
            phases["  slot held: thread start -> encoded()"].append(freed[2] - thread_start)
        del index
    n = len(ids)
    span = (main[-1][3] - main[0][2]) if main else 0.0
    per_run = {
        name: sum(1 for e in main if e[0] == name)
        for name in ("Daemon.step", "scan_inbox", "Daemon._beat", "Daemon._recover")
    }
    totals: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    for ev in events:
        if ev[0] not in ("Daemon.step", "run_attempt", "ffmpeg exit seen"):
            totals[ev[0]] += ev[3] - ev[2]
            calls[ev[0]] += 1
    return {
        "function_total_ms_per_job (calls per job)": {
            k: f"{totals[k] / n * 1e3:.2f} ({calls[k] / n:.1f})"
            for k in sorted(totals, key=lambda k: -totals[k])
        },
        "ms_per_job": {
            k: {
                "median": round(statistics.median(v) * 1e3, 2),
                "mean": round(statistics.fmean(v) * 1e3, 2),
            }
            for k, v in phases.items()
        },
        "counts_per_job": {k: round(statistics.fmean(v), 2) for k, v in counts.items()},
        "loop_calls_in_run": per_run,
        "jobs": n,
        "trace_span_s": round(span, 3),
    }


def one_run(root: Path, jobs: int, extra: dict[str, str]) -> dict[str, Any]:
    """One daemon, one burst of `jobs`, traced; then the same commands in a shell loop."""
    from spool_bench import (
        FINAL_STATES,
        TRIVIAL_JOB,
        Daemon,
        argv_from_job_log,
        bench_shell_loop,
        cpu_seconds,
        load_average,
        parse_ts,
        read_json,
        run_one,
    )

    root.mkdir(parents=True)
    trace = root / "trace.json"
    spool = root / "spool"
    result: dict[str, Any] = {"load_before": load_average()}

    class TracedDaemon(Daemon):
        def start(self, ready_timeout: float = 60.0) -> None:
            import spool_bench

            original = spool_bench.spooler_command
            spool_bench.spooler_command = lambda: [
                sys.executable,
                str(Path(__file__).resolve()),
                "--daemon",
                str(trace),
            ]
            try:
                super().start(ready_timeout)
            finally:
                spool_bench.spooler_command = original

    daemon = TracedDaemon(spool, {"SPOOLER_MAX_JOBS": "1", **extra})
    try:
        daemon.start()
        run_one(spool, "warmup")
        cpu0, split0 = cpu_seconds(daemon.pid), cpu_by_thread(daemon.pid)
        ids = [f"burst-{i:05d}" for i in range(jobs)]
        payload = json.dumps(TRIVIAL_JOB).encode()
        for job_id in ids:
            (spool / "inbox" / f".tmp-{job_id}").write_bytes(payload)
        t0 = time.time()
        for job_id in ids:
            os.rename(spool / "inbox" / f".tmp-{job_id}", spool / "inbox" / f"{job_id}.json")
        pending = list(ids)
        while pending:
            status = read_json(spool / "jobs" / pending[0] / "status.json")
            if status is not None and status.get("state") in FINAL_STATES:
                pending.pop(0)
            else:
                time.sleep(0.02)
        cpu1, split1 = cpu_seconds(daemon.pid), cpu_by_thread(daemon.pid)
    finally:
        daemon.stop()
    statuses = [read_json(spool / "jobs" / j / "status.json") or {} for j in ids]
    bad = [s.get("state") for s in statuses if s.get("state") != "succeeded"]
    if bad:
        raise RuntimeError(f"jobs did not succeed: {bad[:5]}")
    t_end = max(parse_ts(s["finishedAt"]) for s in statuses)
    argvs = [argv_from_job_log(spool / "jobs" / j / "job.log") for j in ids]
    loop_times0 = os.times()
    loop = bench_shell_loop(root, argvs)
    loop_times1 = os.times()
    loop_cpu = (loop_times1.children_user + loop_times1.children_system) - (
        loop_times0.children_user + loop_times0.children_system
    )
    n = jobs
    result |= {
        "daemon_env": extra,
        "daemon_wall_s": round(t_end - t0, 3),
        "loop_wall_s": loop["loop_seconds"],
        "wall_ratio": round((t_end - t0) / loop["loop_seconds"], 3),
        "extra_wall_ms_per_job": round(((t_end - t0) - loop["loop_seconds"]) / n * 1e3, 1),
        "daemon_cpu_ms_per_job": round((cpu1 - cpu0) / n * 1e3, 2),
        "loop_cpu_ms_per_job (bash + ffmpeg)": round(loop_cpu / n * 1e3, 2),
        "daemon_cpu_ms_per_job_by_part": {
            k: round((v - split0.get(k, 0.0)) / n * 1e3, 2)
            for k, v in split1.items()
            if v - split0.get(k, 0.0) > 0
        },
        "load_after": load_average(),
    }
    result["trace"] = analyse(json.loads(trace.read_text()), ids)
    return result


SUMMARY_KEYS = ("wall_ratio", "extra_wall_ms_per_job", "daemon_cpu_ms_per_job")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs of one design: the headline figures and each phase."""
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in SUMMARY_KEYS}
    out["load"] = [r["load_before"] for r in runs]
    phases = runs[0]["trace"]["ms_per_job"]
    out["phase_mean_ms"] = {
        p: round(statistics.median(r["trace"]["ms_per_job"][p]["mean"] for r in runs), 2)
        for p in phases
        if all(p in r["trace"]["ms_per_job"] for r in runs)
    }
    out["counts_per_job"] = runs[0]["trace"]["counts_per_job"]
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--daemon":
        run_daemon(Path(sys.argv[2]))
        return 0
    from spool_bench import RESULTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemon")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another design: the spooler package found in DIR (PYTHONPATH), e.g. an "
        "earlier commit's `git archive <rev> spooler | tar -x -C DIR`; runs alternate",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each design")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "spool_trace.json")
    args = parser.parse_args(argv)
    extra = dict(e.split("=", 1) for e in args.env)
    designs = {"this tree": extra} | {
        name: extra | {"PYTHONPATH": str(Path(path).resolve())}
        for name, path in (c.split("=", 1) for c in args.compare)
    }
    root = Path(tempfile.mkdtemp(prefix="spool-trace-"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in designs}
    try:
        for round_no in range(args.rounds):
            order = list(designs)
            if round_no % 2:
                order.reverse()  # alternate who goes first
            for name in order:
                label = f"{round_no}-{name.replace(' ', '_')}"
                runs[name].append(one_run(root / label, args.jobs, designs[name]))
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    result = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "summary": {name: summarize(r) for name, r in runs.items()},
        "runs": runs,
    }
    print(json.dumps(result["summary"], indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
