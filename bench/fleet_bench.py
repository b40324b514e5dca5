"""The worker fleet (issue 16, docs/fleet.md) against the spool, in one run, real processes:

    .venv/bin/python bench/fleet_bench.py            # 1,000 jobs, a few minutes
    .venv/bin/python bench/fleet_bench.py --quick    # 200 jobs, about a minute

1. throughput: N trivial testpattern jobs (0.2 s, 32x32) through 3 BullMQ workers (a
   redis-server of its own on loopback, AOF everysec; jobs enqueued in one addBulk by BullMQ
   for Node) and through 3 spool daemons sharing one spool (jobs renamed into the inbox in
   one burst); each from the first enqueue to the last finish. The ratio is BullMQ / spool.
2. pick-up latency (BullMQ): enqueue -> active, one job at a time into an idle fleet of 3
   (each job enqueued once the previous one completed), from BullMQ's own stamps
   (`timestamp` set by Node at add, `processedOn` by the worker at moveToActive; one host,
   one clock). Target: p99 < 50 ms.

Needs redis-server, Node.js and web/node_modules (npm ci in web/). Prints a markdown table
and writes JSON to bench/results/fleet.json (fleet.quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH_DIR))

from fleet_support import WEB, NodeDriver, RedisServer, start_worker  # noqa: E402
from spool_bench import percentile, summarize_ms  # noqa: E402
from support import FAST_SETTINGS  # noqa: E402

JOB: dict[str, Any] = {"kind": "testpattern", "durationSeconds": 0.2, "width": 32, "height": 32}
WORKERS = 3
TARGET_PICKUP_P99_MS = 50.0


def bullmq_throughput(root: Path, jobs: int) -> dict[str, Any]:
    redis_server = RedisServer(root / "redis")
    redis_server.start()
    redis_server.client().config_set("appendfsync", "everysec")  # the recommended setting
    node = NodeDriver(redis_server.url)
    pool = []
    try:
        pool = [start_worker(root, redis_server.url, i) for i in range(WORKERS)]
        batch = [{"jobId": f"t{i:05d}", "job": JOB} for i in range(jobs)]
        started = time.time()
        node.send(op="bulk", jobs=batch)
        client = redis_server.client()
        while client.zcard("bull:exports:completed") + client.zcard("bull:exports:failed") < jobs:
            time.sleep(0.2)
        finished = [
            int(client.hget(f"bull:exports:{j['jobId']}", "finishedOn") or 0) for j in batch
        ]
        failed = client.zcard("bull:exports:failed")
        return {"jobs": jobs, "failed": failed, "seconds": round(max(finished) / 1000 - started, 3)}
    finally:
        for worker in pool:
            worker.stop()
        node.close()
        redis_server.stop()


def spool_throughput(root: Path, jobs: int) -> dict[str, Any]:
    spool = root / "spool"
    (spool / "inbox").mkdir(parents=True)
    daemons = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env.update(FAST_SETTINGS)
    env.update(
        {
            "SPOOLER_SPOOL_DIR": str(spool),
            "SPOOLER_MEDIA_ROOTS": json.dumps([str(root)]),
            "SPOOLER_MAX_JOBS": "1",
            "SPOOLER_LOG_LEVEL": "info",
        }
    )
    try:
        for i in range(WORKERS):
            with (root / f"spool-daemon-{i}.log").open("wb") as log:
                daemons.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "spooler", "run"],
                        env={**env, "SPOOLER_WORKER_NAME": f"s{i}"},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=root,
                    )
                )
        time.sleep(3)  # started (the first turn of each loop)
        started = time.time()
        payload = json.dumps(JOB).encode()
        for i in range(jobs):
            tmp = spool / "inbox" / f".tmp-s{i:05d}"
            tmp.write_bytes(payload)
            os.rename(tmp, spool / "inbox" / f"s{i:05d}.json")
        ends: dict[str, float] = {}
        while len(ends) < jobs:
            time.sleep(0.5)
            for i in range(jobs):
                job_id = f"s{i:05d}"
                if job_id in ends:
                    continue
                try:
                    status = json.loads((spool / "jobs" / job_id / "status.json").read_bytes())
                except (OSError, ValueError):
                    continue
                if status.get("finishedAt"):
                    ends[job_id] = datetime.fromisoformat(status["finishedAt"]).timestamp()
        return {"jobs": jobs, "seconds": round(max(ends.values()) - started, 3)}
    finally:
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            proc.wait(timeout=30)


def bullmq_pickup(root: Path, jobs: int) -> dict[str, Any]:
    redis_server = RedisServer(root / "redis-pickup")
    redis_server.start()
    redis_server.client().config_set("appendfsync", "everysec")
    node = NodeDriver(redis_server.url)
    pool = []
    try:
        pool = [start_worker(root, redis_server.url, 10 + i) for i in range(WORKERS)]
        time.sleep(1)
        for i in range(jobs):
            node.send(op="submit", jobId=f"p{i:05d}", job=JOB)
            node.final(f"p{i:05d}", timeout=60)
        client = redis_server.client()
        latencies = []
        for i in range(jobs):
            fields = client.hmget(f"bull:exports:p{i:05d}", "timestamp", "processedOn")
            latencies.append((int(fields[1]) - int(fields[0])) / 1000)
        return summarize_ms(latencies) | {"samples_ms": [round(v * 1000, 1) for v in latencies]}
    finally:
        for worker in pool:
            worker.stop()
        node.close()
        redis_server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--pickup-jobs", type=int, default=None)
    args = parser.parse_args(argv)
    jobs = args.jobs or (200 if args.quick else 1000)
    pickup_jobs = args.pickup_jobs or (50 if args.quick else 200)
    subprocess.run(
        ["node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], cwd=WEB, check=True
    )
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as scratch:
        root = Path(scratch)
        (root / "b").mkdir()
        (root / "s").mkdir()
        (root / "p").mkdir()
        fleet = bullmq_throughput(root / "b", jobs)
        spool = spool_throughput(root / "s", jobs)
        pickup = bullmq_pickup(root / "p", pickup_jobs)
    ratio = fleet["seconds"] / spool["seconds"]
    results = {
        "workers": WORKERS,
        "bullmq": fleet,
        "spool": spool,
        "ratio_bullmq_over_spool": round(ratio, 3),
        "pickup": pickup,
        "pickup_p99_target_ms": TARGET_PICKUP_P99_MS,
        "cpus": os.cpu_count(),
    }
    print("| bench | figure | target |")
    print("|---|---|---|")
    print(
        f"| {jobs} jobs, {WORKERS} BullMQ workers | {fleet['seconds']:.1f} s "
        f"({jobs / fleet['seconds']:.1f} jobs/s) | |"
    )
    print(
        f"| {jobs} jobs, {WORKERS} spool daemons | {spool['seconds']:.1f} s "
        f"({jobs / spool['seconds']:.1f} jobs/s) | |"
    )
    print(f"| ratio BullMQ / spool | {ratio:.2f} | |")
    p99 = percentile(pickup["samples_ms"], 99)
    print(
        f"| pick-up enqueue -> active ({pickup['n']} jobs) | median {pickup['median_ms']:.1f} ms,"
        f" p99 {p99:.1f} ms | p99 < {TARGET_PICKUP_P99_MS:.0f} ms |"
    )
    out = BENCH_DIR / "results" / ("fleet.quick.json" if args.quick else "fleet.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
