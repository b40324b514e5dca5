"""Webhook latency (issue 15): from `succeeded` written to the webhook received.

    .venv/bin/python bench/webhook_bench.py              # 200 jobs, about a minute
    .venv/bin/python bench/webhook_bench.py --jobs 50    # quicker

A real `spooler run` process on a temporary spool, with webhooks.url pointing at a real HTTP
receiver in this process on 127.0.0.1; N trivial testpattern jobs (0.2 s, 32x32) dropped in
one burst (max_jobs=1). For each job's `job.succeeded` request: received (time.time() when
the receiver has read the body) minus the payload's `finishedAt` (the daemon's clock when it
wrote the final status: the same clock on one host). Every signature is verified.
Prints the figures and writes bench/results/webhook.json. Target: p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def receiver() -> tuple[ThreadingHTTPServer, list[tuple[float, dict[str, Any]]]]:
    got: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()
    verifier = Webhook(SECRET)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            at = time.time()
            payload = verifier.verify(body, dict(self.headers.items()))
            with lock:
                got.append((at, payload))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "webhook.json")
    args = parser.parse_args()
    server, got = receiver()
    workdir = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    spool = workdir / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env.update(
        {
            "SPOOLER_SPOOL_DIR": str(spool),
            "SPOOLER_MAX_JOBS": "1",
            "SPOOLER_LOG_FORMAT": "json",
            "SPOOLER_FFMPEG_NICE": "0",
            "SPOOLER_WEBHOOKS__URL": f"http://127.0.0.1:{server.server_address[1]}/hook",
            "SPOOLER_WEBHOOKS__SECRETS": json.dumps([SECRET]),
            "SPOOLER_WEBHOOKS__ALLOWED_HOSTS": '["127.0.0.1"]',
            "SPOOLER_WEBHOOKS__ALLOW_PRIVATE": '["127.0.0.1"]',
        }
    )
    log = (workdir / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "spooler", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    try:
        inbox = spool / "inbox"
        deadline = time.monotonic() + 30
        while not inbox.is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        job = {"kind": "testpattern", "durationSeconds": 0.2, "width": 32, "height": 32, "fps": 10}
        for i in range(args.jobs):
            tmp = inbox / f".bench-{i:04d}.json.tmp"
            tmp.write_text(json.dumps(job))
            tmp.rename(inbox / f"bench-{i:04d}.json")
        deadline = time.monotonic() + 60 + args.jobs * 2
        while len(got) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(30)
        if daemon.poll() is None:
            daemon.kill()
        server.shutdown()
        log.close()
    latencies = [
        (at - datetime.fromisoformat(p["data"]["finishedAt"]).timestamp()) * 1000
        for at, p in got
        if p["type"] == "job.succeeded"
    ]
    shutil.rmtree(workdir, ignore_errors=True)
    if not latencies:
        print("no webhook received", file=sys.stderr)
        return 1
    result = {
        "bench": "webhook latency: succeeded written -> webhook received (ms)",
        "jobs": args.jobs,
        "received": len(latencies),
        "median_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "target_p99_ms": 100,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"| jobs | received | median | p99 | max | target |\n|---|---|---|---|---|---|\n"
        f"| {args.jobs} | {len(latencies)} | {result['median_ms']} ms | {result['p99_ms']} ms "
        f"| {result['max_ms']} ms | p99 < 100 ms |"
    )
    return 0 if len(latencies) == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
