"""The `spooler` command: run the daemon and talk to a spool through its files.

Exit codes of `submit --wait` and `status`: 0 succeeded, 1 failed, 3 cancelled, 4 rejected,
5 still active (status only), 2 usage or protocol errors (bad file, unknown job).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from spooler import __version__
from spooler.config import Settings, load_settings
from spooler.errors import ConfigError, JobError
from spooler.fsutil import atomic_write_bytes
from spooler.kinds import parse_job
from spooler.layout import SpoolLayout, is_valid_job_id
from spooler.logs import configure_logging
from spooler.schema import all_schemas, render, write_schemas
from spooler.spool import job_ids, read_status
from spooler.status import JobStatus, State
from spooler.webhooks.cli import webhook as webhook_cli
from spooler.worker import WorkerIdentity, read_heartbeats

EXIT_BY_STATE = {State.SUCCEEDED: 0, State.FAILED: 1, State.CANCELLED: 3, State.REJECTED: 4}
EXIT_ACTIVE = 5
EXIT_USAGE = 2

console = Console(stderr=False)


def _settings(ctx: click.Context) -> Settings:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_settings(obj.get("config"))
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)  # not 1, which means "the job failed"
    settings: Settings = obj["settings"]
    return settings


def _layout(ctx: click.Context) -> SpoolLayout:
    return SpoolLayout(_settings(ctx).spool_dir)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML settings file (default: $SPOOLER_CONFIG, else embedded defaults).",
)
@click.version_option(__version__, prog_name="spooler")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """spooler: export jobs through a file spool, run with ffmpeg."""
    ctx.ensure_object(dict)["config"] = config


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from spooler.daemon import Daemon

    settings = _settings(ctx)
    configure_logging(settings.log_format, settings.log_level)
    config_file = ctx.obj.get("config")
    if config_file is None and os.environ.get("SPOOLER_CONFIG"):
        config_file = Path(os.environ["SPOOLER_CONFIG"])
    sys.exit(Daemon(settings, config_file=config_file).run())


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "job_id", help="Job id (default: the file name without .json).")
@click.option("--wait", is_flag=True, help="Follow progress until the job ends; exit by its state.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after N seconds.")
@click.pass_context
def submit(
    ctx: click.Context, file: Path, job_id: str | None, wait: bool, timeout: float | None
) -> None:
    """Drop FILE into the inbox atomically (temporary name, fsync, rename)."""
    layout = _layout(ctx)
    job_id = job_id or file.name.removesuffix(".json")
    if not is_valid_job_id(job_id):
        raise click.UsageError(
            f"{job_id!r} is not a valid job id (letters, digits, _ and -, "
            "at most 128, starting with a letter or digit)"
        )
    target = layout.inbox_job(job_id)
    if target.exists() or layout.job_dir(job_id).exists():
        click.echo(f"error: job {job_id} already exists", err=True)
        sys.exit(EXIT_USAGE)
    layout.inbox.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, file.read_bytes())
    click.echo(f"submitted {job_id} -> {target}")
    if wait:
        sys.exit(wait_for_job(layout, job_id, timeout))


def wait_for_job(layout: SpoolLayout, job_id: str, timeout: float | None) -> int:
    deadline = time.monotonic() + timeout if timeout else None
    status: JobStatus | None = None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{job_id}: waiting to be claimed", total=1.0)
        while deadline is None or time.monotonic() < deadline:
            try:
                status = read_status(layout, job_id)
            except ValueError:
                status = None
            if status is not None:
                label = f"{job_id}: {status.state.value}"
                if status.step:
                    label += f" ({status.step})"
                bar.update(task, completed=status.progress, description=label)
                if status.is_final:
                    break
            time.sleep(0.2)
    if status is None or not status.is_final:
        click.echo(f"{job_id}: still not finished", err=True)
        return EXIT_ACTIVE
    _print_result(layout, status)
    return EXIT_BY_STATE[status.state]


def _print_result(layout: SpoolLayout, status: JobStatus) -> None:
    # Plain echo, not rich: paths must never be wrapped or read as markup.
    job_dir = layout.job_dir(status.job_id)
    click.echo(f"{status.job_id}: {status.state.value}")
    if status.error:
        click.echo(f"  error {status.error.code.value}: {status.error.message}")
    for warning in status.warnings:
        click.echo(f"  warning {warning.code}: {warning.message}")
    for output in status.outputs:
        click.echo(f"  output {job_dir / output.path} ({output.size_bytes} bytes)")
    click.echo(f"  status {layout.status_file(status.job_id)}")


@main.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Generate a sample multicam shoot, export it through a real daemon, then stop."""
    from spooler.demo import run_demo

    settings = _settings(ctx)
    sys.exit(run_demo(settings, ctx.obj.get("config")))


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status file as it is.")
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job's status; exit code by state."""
    if _settings(ctx).intake == "bullmq":
        from spooler.intake import bullmq_cli

        sys.exit(bullmq_cli.status(_settings(ctx), job_id, as_json))
    layout = _layout(ctx)
    try:
        current = read_status(layout, job_id) if is_valid_job_id(job_id) else None
    except ValueError as exc:
        click.echo(f"error: the status of {job_id} cannot be read: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if current is None:
        if is_valid_job_id(job_id) and layout.inbox_job(job_id).exists():
            click.echo(
                json.dumps({"jobId": job_id, "state": "submitted"})
                if as_json
                else f"{job_id}: submitted, not yet claimed"
            )
            sys.exit(EXIT_ACTIVE)
        click.echo(f"error: no job {job_id}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(current.to_json(), indent=2))
    else:
        _print_result(layout, current)
        click.echo(
            f"  progress {current.progress:.0%}, attempt {current.attempt}/{current.max_attempts}"
        )
    sys.exit(EXIT_BY_STATE.get(current.state, EXIT_ACTIVE))


@main.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State]))
@click.pass_context
def list_jobs(ctx: click.Context, as_json: bool, states: tuple[str, ...]) -> None:
    """List jobs in the spool (newest first), and files waiting in the inbox."""
    if _settings(ctx).intake == "bullmq":
        from spooler.intake import bullmq_cli

        bullmq_cli.list_jobs(_settings(ctx), as_json, states)
        return
    layout = _layout(ctx)
    rows: list[JobStatus] = []
    for job_id in job_ids(layout):
        try:
            found = read_status(layout, job_id)
        except ValueError:
            continue
        if found is not None and (not states or found.state.value in states):
            rows.append(found)
    rows.sort(key=lambda s: s.submitted_at, reverse=True)
    pending = sorted(
        p.name.removesuffix(".json")
        for p in layout.inbox.glob("*.json")
        if not p.name.startswith(".")
    )
    if as_json:
        for job_id in pending if not states else []:
            click.echo(json.dumps({"jobId": job_id, "state": "submitted"}))
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        "jobId": row.job_id,
                        "state": row.state.value,
                        "progress": row.progress,
                        "kind": row.kind,
                        "submittedAt": row.submitted_at.isoformat(),
                        "error": row.error.code.value if row.error else None,
                    }
                )
            )
        return
    table = Table("job", "kind", "state", "progress", "attempt", "submitted", "error")
    for job_id in pending if not states else []:
        table.add_row(job_id, "", "submitted", "", "", "", "")
    for row in rows:
        table.add_row(
            row.job_id,
            row.kind or "",
            row.state.value,
            f"{row.progress:.0%}",
            f"{row.attempt}/{row.max_attempts}",
            row.submitted_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.error.code.value if row.error else "",
        )
    console.print(table)


def _touch_marker(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, b"")


@main.command()
@click.argument("job_id")
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Ask for a job to be cancelled (queued or running)."""
    if not is_valid_job_id(job_id):
        raise click.UsageError(f"{job_id!r} is not a valid job id")
    if _settings(ctx).intake == "bullmq":
        from spooler.intake import bullmq_cli

        bullmq_cli.cancel(_settings(ctx), job_id)
        return
    _touch_marker(_layout(ctx).inbox_cancel(job_id))
    click.echo(f"cancel requested for {job_id}")


@main.command()
@click.argument("job_id")
@click.pass_context
def delete(ctx: click.Context, job_id: str) -> None:
    """Remove a job and its outputs (cancelling it first if it is still active)."""
    if not is_valid_job_id(job_id):
        raise click.UsageError(f"{job_id!r} is not a valid job id")
    _touch_marker(_layout(ctx).inbox_delete(job_id))
    click.echo(f"delete requested for {job_id}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check a job file against the schema without submitting it."""
    try:
        _spec, kind = parse_job(file.read_bytes())
    except JobError as exc:
        click.echo(
            json.dumps(
                {
                    "valid": False,
                    "code": exc.code.value,
                    "message": exc.message,
                    "details": exc.details,
                },
                indent=2,
            )
        )
        sys.exit(1)
    click.echo(json.dumps({"valid": True, "kind": kind.name}))


@main.command()
@click.option(
    "--write",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the job, status, webhook, manifest and sync schemas into DIRECTORY.",
)
@click.argument(
    "which",
    type=click.Choice(["job", "status", "webhook", "manifest", "sync", "all"]),
    default="all",
)
def schema(directory: Path | None, which: str) -> None:
    """Print the JSON Schemas of the job file, the status file, the webhook body, the proxy
    manifest and the sync result."""
    if directory is not None:
        for path in write_schemas(directory):
            click.echo(f"wrote {path}")
        return
    schemas = all_schemas()
    if which == "all":
        click.echo(json.dumps(schemas, indent=2, sort_keys=True))
    else:
        click.echo(render(schemas[f"{which}.schema.json"]), nl=False)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx: click.Context, as_json: bool) -> None:
    """Check the spool's invariants (after a crash drill or an incident); exit 1 if broken."""
    from spooler.audit import audit_spool, format_report

    report = audit_spool(_layout(ctx))
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else format_report(report))
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--any", "any_worker", is_flag=True, help="Healthy if any worker on the spool is.")
@click.option(
    "--max-age",
    type=float,
    default=None,
    help="Seconds a heartbeat may be old (default: 3 heartbeats).",
)
@click.pass_context
def health(ctx: click.Context, any_worker: bool, max_age: float | None) -> None:
    """Exit 0 when a daemon (on this host, by default) has a fresh heartbeat, else 1."""
    settings = _settings(ctx)
    layout = SpoolLayout(settings.spool_dir)
    limit = max_age if max_age is not None else 3 * settings.heartbeat_seconds
    me = WorkerIdentity.current(settings.worker_name)
    try:
        # Age by the file server's clock: stamp a probe file and compare mtimes.
        probe = layout.workers / f".probe-{os.getpid()}"
        probe.touch()
        server_now = probe.stat().st_mtime
        probe.unlink()
    except OSError as exc:
        click.echo(f"unhealthy: cannot write to {layout.workers}: {exc}")
        sys.exit(1)
    fresh = []
    for beat in read_heartbeats(layout).values():
        local = beat.host == me.host
        age = server_now - beat.mtime
        if (any_worker or local) and age <= limit and beat.data.get("state") == "running":
            fresh.append((beat.worker_id, age, beat.data.get("jobsRunning", [])))
    if not fresh:
        click.echo(f"unhealthy: no fresh heartbeat in {layout.workers}")
        sys.exit(1)
    if settings.intake == "bullmq":
        from spooler.intake import bullmq_cli

        problem = bullmq_cli.redis_problem(settings)
        if problem is not None:
            click.echo(f"unhealthy: {problem}")
            sys.exit(1)
    for worker_id, age, running in fresh:
        click.echo(f"healthy: {worker_id} beat {age:.1f} s ago, running {len(running)}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every check.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check this machine: ffmpeg and encoders, spool permissions, inotify, disk, fonts.

    Prints PASS/WARN/FAIL per check; exit 1 if any check FAILs, else 0.
    """
    from spooler.doctor import Level, overall, render_json, render_text, run_checks

    checks = run_checks(_settings(ctx))
    if _settings(ctx).intake == "bullmq":
        from spooler.intake import bullmq_cli

        checks += bullmq_cli.doctor_checks(_settings(ctx))
    if as_json:
        click.echo(json.dumps(render_json(checks), indent=2))
    else:
        click.echo(render_text(checks))
    sys.exit(1 if overall(checks) is Level.FAIL else 0)


@main.command()
@click.option(
    "--write",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the textfile atomically to PATH (e.g. the node_exporter textfile folder).",
)
@click.pass_context
def metrics(ctx: click.Context, path: Path | None) -> None:
    """Print (or write) the Prometheus metrics of the spool, once."""
    from spooler.metrics import collect_snapshot, render_metrics, write_metrics

    text = render_metrics(collect_snapshot(_layout(ctx)))
    if path is None:
        click.echo(text, nl=False)
        return
    write_metrics(path, text)
    click.echo(f"wrote {path}")


# `spooler webhook ...` lives with the webhooks package (issue 15).
main.add_command(webhook_cli)
