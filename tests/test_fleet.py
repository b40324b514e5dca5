"""The worker fleet on Redis + BullMQ (docs/fleet.md), all real: a redis-server of our own on
loopback, the Node producer (BullMQ for Node through web/src/bullmq.ts), spooler workers with
`intake: bullmq` as processes, real ffmpeg on 32x32 test patterns.

Skipped, with the reason, where redis-server, Node.js or the Python bullmq is missing
(.ci/run installs them)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_support import (
    WEB,
    NodeDriver,
    RedisServer,
    completions,
    ffmpeg_pids,
    settled_completions,
    start_worker,
)
from support import DaemonProcess, pid_alive, tiny_job

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js not installed"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("bullmq") is None, reason="Python bullmq not installed"
    ),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def built_web() -> Path:
    """web/dist from web/src (the driver imports the built module)."""
    if not (WEB / "node_modules" / "bullmq").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=300)
    subprocess.run(
        ["node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"],
        cwd=WEB,
        check=True,
        timeout=120,
    )
    return WEB / "dist"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def node(built_web: Path, redis_server: RedisServer) -> Iterator[NodeDriver]:
    driver = NodeDriver(redis_server.url)
    yield driver
    driver.close()


@pytest.fixture
def workers(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(**settings: str) -> DaemonProcess:
        worker = start_worker(tmp_path, redis_server.url, len(started), **settings)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
            worker.proc.kill()
            worker.proc.wait(timeout=10)


def started_on(worker: DaemonProcess, job_id: str) -> bool:
    return any(
        e.get("event") == "job_started" and e.get("job_id") == job_id for e in worker.events()
    )


def wait_started(pool: list[DaemonProcess], job_id: str, timeout: float = 15) -> DaemonProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in pool:
            if worker.proc.poll() is None and started_on(worker, job_id):
                return worker
        time.sleep(0.05)
    raise AssertionError(f"{job_id} did not start on any of {len(pool)} workers")


def failure(event: dict[str, Any]) -> dict[str, Any]:
    assert event["event"] == "failed", event
    reason: dict[str, Any] = json.loads(event["failedReason"])
    assert set(reason) == {"code", "message", "details"}
    return reason


def test_end_to_end_node_sees_progress_and_result(
    node: NodeDriver, workers: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    # Given one worker, when the web side enqueues a 2.5 s test pattern with BullMQ for Node
    worker = workers()
    node.send(op="submit", jobId="e2e", job=tiny_job(2.5, priority=5, realtime=True))
    done = node.final("e2e", timeout=30)
    # Then QueueEvents saw it start, report progress with the status fields, and complete
    events = [e for e in node.snapshot() if e.get("jobId") == "e2e"]
    assert done["event"] == "completed", done
    assert any(e["event"] == "active" for e in events)
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert progress and set(progress[-1]) >= {"progress", "step", "etaSeconds", "speed"}
    assert any(0 < p["progress"] < 1 for p in progress), progress  # seen mid-run
    assert progress[-1]["step"] == "render"
    # and the result lists the output, published in the worker's folder with that size
    [output] = done["returnvalue"]["outputs"]
    published = tmp_path / "worker-0" / "jobs" / "e2e" / output["path"]
    assert published.stat().st_size == output["sizeBytes"] > 0
    assert settled_completions([worker], 1) == {"e2e": ["w0"]}
    # and the status read through the web module says completed, with BullMQ's priority
    node.send(op="status", jobId="e2e")
    view = node.wait(lambda e: e["event"] == "status")["view"]
    assert view["state"] == "completed" and view["attemptsMade"] == 1


def test_invalid_job_fails_at_once_with_the_loaders_code(
    node: NodeDriver, workers: Callable[..., DaemonProcess]
) -> None:
    worker = workers()
    node.send(
        op="submit",
        jobId="bad",
        job={"kind": "testpattern", "durationSeconds": -1, "maxAttempts": 5},
    )
    reason = failure(node.final("bad"))
    assert reason["code"] == "invalid_job"
    assert reason["details"]["errors"][0]["path"] == "durationSeconds"
    node.send(op="status", jobId="bad")
    view = node.wait(lambda e: e["event"] == "status")["view"]
    assert view["state"] == "failed" and view["attemptsMade"] == 1  # UnrecoverableError: no retry
    rejected = [e for e in worker.events() if e.get("event") == "job_rejected"]
    assert len(rejected) == 1


def test_timeout_kills_ffmpeg_and_is_not_retried(
    node: NodeDriver, workers: Callable[..., DaemonProcess]
) -> None:
    worker = workers()
    job = tiny_job(20.0, realtime=True, timeoutSeconds=1, maxAttempts=3)
    started = time.monotonic()
    node.send(op="submit", jobId="slow", job=job)
    reason = failure(node.final("slow", timeout=20))
    assert reason["code"] == "timeout"
    assert time.monotonic() - started < 6
    node.send(op="status", jobId="slow")
    view = node.wait(lambda e: e["event"] == "status")["view"]
    assert view["attemptsMade"] == 1
    starts = [e for e in worker.events() if e.get("event") == "job_started"]
    assert len(starts) == 1


def test_cancel_running_and_waiting(
    node: NodeDriver,
    workers: Callable[..., DaemonProcess],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # Given one worker busy with a long job and a second job waiting behind it
    worker = workers()
    node.send(op="submit", jobId="running", job=tiny_job(30.0, realtime=True))
    wait_started([worker], "running")
    job_dir = tmp_path / "worker-0" / "jobs" / "running"
    deadline = time.monotonic() + 5
    while not ffmpeg_pids(job_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    [pid] = ffmpeg_pids(job_dir)
    node.send(op="submit", jobId="waiting", job=tiny_job(0.2))
    node.wait(lambda e: e["event"] == "submitted" and e["jobId"] == "waiting")
    # When the web app cancels the waiting one: it is simply removed
    node.send(op="cancel", jobId="waiting")
    node.wait(lambda e: e["event"] == "removed" and e["jobId"] == "waiting", timeout=5)
    # When it cancels the running one while the worker's pub/sub link is reconnecting
    # (the hint is lost; the durable key must still reach the worker)
    redis_server.client().client_kill_filter(_type="pubsub")
    node.send(op="cancel", jobId="running")
    sent = node.wait(lambda e: e["event"] == "cancel_sent" and e["jobId"] == "running")
    # Then ffmpeg is killed and the job fails as cancelled within 2 s, never retried
    done = node.final("running", timeout=10)
    assert failure(done)["code"] == "cancelled"
    assert done["at"] - sent["at"] < 2000, done["at"] - sent["at"]
    assert not pid_alive(pid)
    time.sleep(1)
    assert started_on(worker, "waiting") is False
    assert completions([worker]) == {}


def test_kill9_twice_then_completed_once(
    node: NodeDriver, workers: Callable[..., DaemonProcess]
) -> None:
    # Given three workers and one job of 3 s
    pool = [workers() for _ in range(3)]
    node.send(op="submit", jobId="tough", job=tiny_job(3.0, realtime=True, maxAttempts=1))
    # When the worker running it is killed with SIGKILL, twice in a row
    first = wait_started(pool, "tough")
    time.sleep(0.5)
    first.kill9()
    second = wait_started([w for w in pool if w is not first], "tough", timeout=15)
    time.sleep(0.5)
    second.kill9()
    # Then the lock expires, the last worker takes it over and completes it, once
    done = node.final("tough", timeout=30)
    assert done["event"] == "completed", done
    [last] = [w for w in pool if w not in (first, second)]
    assert settled_completions(pool, 1) == {"tough": [last.env["SPOOLER_WORKER_NAME"]]}
    node.send(op="status", jobId="tough")
    view = node.wait(lambda e: e["event"] == "status")["view"]
    assert view["attemptsMade"] == 1  # worker deaths used no attempt (maxAttempts 1)


def test_sigstop_past_the_lock_publishes_nothing(
    node: NodeDriver, workers: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    pool = [workers() for _ in range(2)]
    node.send(op="submit", jobId="frozen", job=tiny_job(3.0, realtime=True))
    holder = wait_started(pool, "frozen")
    [other] = [w for w in pool if w is not holder]
    # When the holder is frozen past its lock, another worker takes the job over
    time.sleep(0.3)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        wait_started([other], "frozen", timeout=15)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    done = node.final("frozen", timeout=30)
    assert done["event"] == "completed", done
    time.sleep(1.5)  # the resumed worker has had time to act (it must do nothing)
    # Then only the new holder completed and published; the resumed worker dropped the job
    assert settled_completions(pool, 1) == {"frozen": [other.env["SPOOLER_WORKER_NAME"]]}
    name = holder.env["SPOOLER_WORKER_NAME"].replace("w", "worker-")
    assert not (tmp_path / name / "jobs" / "frozen" / "testpattern.mp4").exists()
    assert any(e.get("event") == "job_lock_lost" for e in holder.events())


def test_three_workers_300_jobs_exactly_once_in_priority_order(
    node: NodeDriver, workers: Callable[..., DaemonProcess], redis_server: RedisServer
) -> None:
    # Given 300 small jobs of mixed priorities, all waiting before any worker starts
    jobs = [
        {"jobId": f"p{i:03d}", "job": tiny_job(0.2, fps=5, priority=(i * 7) % 5 - 2)}
        for i in range(300)
    ]
    node.send(op="bulk", jobs=jobs)
    node.wait(lambda e: e["event"] == "bulk_submitted", timeout=30)
    # When three workers drain the queue
    pool = [workers() for _ in range(3)]
    deadline = time.monotonic() + 150
    client = redis_server.client()
    while client.zcard("bull:exports:completed") < 300 and time.monotonic() < deadline:
        time.sleep(0.5)
    # Then each job completed exactly once, counted in the workers' own logs
    done = settled_completions(pool, 300)
    assert len(done) == 300, f"{len(done)} completed"
    assert all(len(by) == 1 for by in done.values())
    assert {len([w for w in done.values() if w == [n]]) > 0 for n in ("w0", "w1", "w2")} == {True}
    # and among waiting jobs the higher priority was always taken first
    started = sorted(
        (int(client.hget(f"bull:exports:{j['jobId']}", "processedOn")), j["job"]["priority"])
        for j in jobs
    )
    inversions = [
        (a, b)
        for a, b in itertools.pairwise(started)
        if a[1] < b[1] and b[0] - a[0] > 20  # timestamps taken before the script runs
    ]
    assert not inversions, inversions[:5]


def test_redis_restarted_mid_run_loses_nothing(
    node: NodeDriver, workers: Callable[..., DaemonProcess], redis_server: RedisServer
) -> None:
    pool = [workers() for _ in range(2)]
    for i in range(12):
        node.send(op="submit", jobId=f"r{i}", job=tiny_job(0.6, realtime=True))
    client = redis_server.client()
    deadline = time.monotonic() + 20
    while client.zcard("bull:exports:completed") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    # When Redis stops cleanly mid-run and comes back on the same port and files
    redis_server.stop()
    time.sleep(1.0)
    redis_server.start()
    client = redis_server.client()
    # Then the workers reconnect and every job completes, none twice
    deadline = time.monotonic() + 60
    while client.zcard("bull:exports:completed") < 12 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.zcard("bull:exports:completed") == 12
    done = settled_completions(pool, 12)
    assert all(len(by) == 1 for by in done.values()), done
    assert all(w.proc.poll() is None for w in pool)


def test_node_and_python_bullmq_ship_the_same_lua_scripts(built_web: Path) -> None:
    """The pinned pair (web/package.json, pyproject.toml) speaks one protocol: every Lua
    script of the Python bullmq is, byte for byte up to whitespace, the Node one."""
    import bullmq

    commands = Path(bullmq.__file__).parent / "commands"
    check = """
      const fs = require("fs"), path = require("path");
      const [py, scripts] = process.argv.slice(1);
      const norm = (s) => s.replace(/\\s+/g, "");
      const differ = [];
      for (const f of fs.readdirSync(py).filter((f) => f.endsWith(".lua"))) {
        const js = path.join(scripts, f.replace(".lua", ".js"));
        const content = fs.existsSync(js) ? Object.values(require(js))[0].content : "";
        if (norm(content) !== norm(fs.readFileSync(path.join(py, f), "utf8"))) differ.push(f);
      }
      console.log(JSON.stringify(differ));
    """
    scripts = WEB / "node_modules" / "bullmq" / "dist" / "cjs" / "scripts"
    result = subprocess.run(
        ["node", "-e", check, str(commands), str(scripts)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(list(commands.glob("*.lua"))) > 30
    assert json.loads(result.stdout) == []


def test_cli_answers_from_redis(
    node: NodeDriver, workers: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    # Given a worker, a finished job, an invalid one and a running one
    worker = workers()
    node.send(op="submit", jobId="ok", job=tiny_job(0.2))
    node.send(op="submit", jobId="bad", job={"kind": "testpattern", "width": 7})
    node.final("ok")
    node.final("bad")
    node.send(op="submit", jobId="long", job=tiny_job(60.0, realtime=True))
    wait_started([worker], "long")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spooler", *args],
            env=worker.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )

    # Then status answers from Redis with the spool's exit codes, and `spooler cancel`
    # stops the running job as cancelled
    assert cli("status", "long").returncode == 5
    assert cli("cancel", "long").returncode == 0
    assert failure(node.final("long", timeout=5))["code"] == "cancelled"
    assert cli("status", "long").returncode == 3
    ok = cli("status", "ok", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["result"]["outputs"][0]["path"] == "testpattern.mp4"
    bad = cli("status", "bad", "--json")
    assert bad.returncode == 4 and json.loads(bad.stdout)["failure"]["code"] == "invalid_job"
    assert cli("status", "nope").returncode == 2
    # and ls, health and doctor too
    listed = {json.loads(line)["jobId"]: line for line in cli("ls", "--json").stdout.splitlines()}
    assert set(listed) == {"ok", "bad", "long"}
    assert cli("health").returncode == 0
    doctor = cli("doctor", "--json")
    names = {c["name"]: c["level"] for c in json.loads(doctor.stdout)["checks"]}
    assert names["redis"] == "PASS" and "redis eviction" not in names


def test_sigterm_gives_a_running_job_back_without_using_an_attempt(
    node: NodeDriver, workers: Callable[..., DaemonProcess]
) -> None:
    # Given a worker running a long job (shutdown grace 2 s) and a second worker, idle
    first = workers()
    node.send(op="submit", jobId="handover", job=tiny_job(6.0, realtime=True, maxAttempts=1))
    wait_started([first], "handover")
    second = workers()
    # When the first one is stopped (SIGTERM): ffmpeg is stopped after the grace period
    assert first.stop(timeout=20) == 0
    # Then the job went back to waiting and the second worker completes it, no attempt used
    wait_started([second], "handover", timeout=10)
    done = node.final("handover", timeout=30)
    assert done["event"] == "completed", done
    assert settled_completions([first, second], 1) == {"handover": ["w1"]}
    outcomes = [e.get("verdict") for e in first.events() if e.get("event") == "job_outcome"]
    assert outcomes == ["requeue"]  # moved back by the worker, not left to stall
    node.send(op="status", jobId="handover")
    assert node.wait(lambda e: e["event"] == "status")["view"]["attemptsMade"] == 1


def test_a_transient_failure_is_retried_by_bullmq(
    node: NodeDriver, workers: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    # Given an ffmpeg that fails its first render (a transient ffmpeg_failed), then works
    from spooler.ffmpeg import find_ffmpeg

    mark = tmp_path / "failed-once"
    wrapper = tmp_path / "flaky-ffmpeg"
    wrapper.write_text(
        "#!/bin/bash\n"
        f'if [[ " $* " == *lavfi* && ! -e {mark} ]]; then touch {mark}; exit 1; fi\n'
        f'exec {find_ffmpeg(None)} "$@"\n'
    )
    wrapper.chmod(0o755)
    worker = workers(SPOOLER_FFMPEG_PATH=str(wrapper))
    # When a job with two attempts runs into it
    node.send(op="submit", jobId="flaky", job=tiny_job(0.2, maxAttempts=2))
    done = node.final("flaky", timeout=30)
    # Then BullMQ retried it (after its backoff) and the second attempt completed
    assert done["event"] == "completed", done
    assert mark.exists()
    outcomes = [e.get("verdict") for e in worker.events() if e.get("event") == "job_outcome"]
    assert outcomes == ["retry", "complete"]
    node.send(op="status", jobId="flaky")
    assert node.wait(lambda e: e["event"] == "status")["view"]["attemptsMade"] == 2


def test_redis_unreachable_past_the_lock_frees_the_workers_slot(
    node: NodeDriver, workers: Callable[..., DaemonProcess], redis_server: RedisServer
) -> None:
    # Given a worker with one slot running a job (locks of 2 s)
    [worker] = [workers()]
    node.send(op="submit", jobId="long", job=tiny_job(4.0, realtime=True))
    wait_started([worker], "long")
    # When Redis cannot be reached for longer than the lock, then comes back
    time.sleep(0.3)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(4.0)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    node.send(op="submit", jobId="after", job=tiny_job(0.2))
    # Then the worker dropped the job it no longer held, and its slot takes the next ones:
    # both complete (the dropped one again, once BullMQ finds it stalled)
    for job_id in ("after", "long"):
        done = node.final(job_id, timeout=60)
        assert done["event"] == "completed", done
    assert any(e.get("event") == "job_ownership_lost" for e in worker.events())
