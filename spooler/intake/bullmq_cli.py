"""`spooler status / ls / cancel / health / doctor` with `intake: bullmq`: the same commands
and exit codes, answered from Redis (spooler/intake/bullmq_view.py) instead of the spool."""

from __future__ import annotations

import json

import click
import redis
from rich.console import Console
from rich.table import Table

from spooler.config import Settings
from spooler.doctor import Check, Level
from spooler.intake.bullmq_view import QueueView

# The same exit codes as the spool's `status` (spooler/cli.py).
EXIT_BY_STATE = {"succeeded": 0, "failed": 1, "cancelled": 3, "rejected": 4}
EXIT_ACTIVE = 5
EXIT_USAGE = 2


def status(settings: Settings, job_id: str, as_json: bool) -> int:
    view = QueueView(settings)
    try:
        job = view.job(job_id)
    finally:
        view.close()
    if job is None:
        click.echo(f"error: no job {job_id} in queue {settings.bullmq.queue}", err=True)
        return EXIT_USAGE
    data = job.to_json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        failure = data["failure"] or {}
        line = f"{job_id}: {data['state']} ({job.state})"
        if failure:
            line += f" {failure.get('code')}: {failure.get('message')}"
        click.echo(line)
        progress = data["progress"] if isinstance(data["progress"], dict) else {}
        click.echo(
            f"  progress {float(progress.get('progress') or 0):.0%}, "
            f"attempts made {data['attemptsMade']}"
        )
    return EXIT_BY_STATE.get(data["state"], EXIT_ACTIVE)


def list_jobs(settings: Settings, as_json: bool, states: tuple[str, ...]) -> None:
    view = QueueView(settings)
    try:
        jobs = [j for j in view.recent() if not states or j.spool_state in states]
        counts = view.counts()
    finally:
        view.close()
    if as_json:
        for job in jobs:
            click.echo(json.dumps(job.to_json()))
        return
    table = Table("job", "state", "queue state", "progress", "attempts made", "error")
    for job in jobs:
        data = job.to_json()
        progress = data["progress"] if isinstance(data["progress"], dict) else {}
        table.add_row(
            job.job_id,
            data["state"],
            job.state,
            f"{float(progress.get('progress') or 0):.0%}",
            str(data["attemptsMade"]),
            (data["failure"] or {}).get("code", ""),
        )
    console = Console()
    console.print(table)
    console.print(" ".join(f"{name} {count}" for name, count in counts.items()))


def cancel(settings: Settings, job_id: str) -> None:
    view = QueueView(settings)
    try:
        view.request_cancel(job_id)
    finally:
        view.close()
    click.echo(f"cancel requested for {job_id} (queue {settings.bullmq.queue})")


def redis_problem(settings: Settings) -> str | None:
    """None when Redis answers; else why not (health is unhealthy without its queue)."""
    view = QueueView(settings)
    try:
        view.redis.ping()
    except redis.RedisError as exc:
        return f"Redis at {settings.bullmq.redis_url.split('@')[-1]} does not answer: {exc}"
    finally:
        view.close()
    return None


def doctor_checks(settings: Settings) -> list[Check]:
    """Redis reachable, recent enough for BullMQ, never evicting, persisting."""
    view = QueueView(settings)
    try:
        facts = view.server_facts()
    except redis.RedisError as exc:
        return [Check("redis", Level.FAIL, f"cannot reach Redis: {exc}")]
    finally:
        view.close()
    checks = [Check("redis", Level.PASS, f"Redis {facts['version']} answers", facts)]
    major_minor = tuple(int(p) for p in str(facts["version"] or "0.0").split(".")[:2])
    if major_minor < (6, 2):
        checks.append(Check("redis version", Level.FAIL, "BullMQ needs Redis >= 6.2", facts))
    if facts["maxmemory_policy"] != "noeviction":
        checks.append(
            Check(
                "redis eviction",
                Level.FAIL,
                f"maxmemory-policy is {facts['maxmemory_policy']}: BullMQ needs noeviction "
                "(an evicted key is a lost job)",
                facts,
            )
        )
    if not facts["aof_enabled"]:
        checks.append(
            Check(
                "redis persistence",
                Level.WARN,
                "appendonly is off: a Redis crash loses the queue (docs/fleet.md)",
                facts,
            )
        )
    return checks
