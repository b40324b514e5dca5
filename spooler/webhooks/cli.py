"""`spooler webhook test [URL]` and `spooler webhook ls [JOB_ID]`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from spooler.config import Settings, load_settings
from spooler.errors import ConfigError
from spooler.layout import SpoolLayout
from spooler.status import utcnow
from spooler.webhooks.events import render_body, sample_payload
from spooler.webhooks.outbox import Outbox
from spooler.webhooks.signing import load_secrets
from spooler.webhooks.sink import send_http
from spooler.webhooks.transport import HttpLimits, system_resolver


def _settings(ctx: click.Context) -> Settings:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    try:
        settings: Settings = obj.get("settings") or load_settings(obj.get("config"))
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    return settings


@click.group()
def webhook() -> None:
    """Job-event webhooks (docs/webhooks.md)."""


@webhook.command(name="test")
@click.argument("url", required=False)
@click.pass_context
def test_command(ctx: click.Context, url: str | None) -> None:
    """Send a signed `spooler.test` event to URL (default: webhooks.url); print the answer.

    Exit 0 if the receiver answered 2xx, 1 otherwise, 2 for a usage or settings error."""
    settings = _settings(ctx)
    cfg = settings.webhooks
    target = url or cfg.url
    if not target:
        raise click.UsageError("no URL given and webhooks.url is not set")
    try:
        secrets = load_secrets(cfg)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    now = utcnow()
    msg_id = f"evt_test_{int(now.timestamp() * 1000)}"
    body = render_body(sample_payload(now))
    limits = HttpLimits(
        connect_timeout=cfg.connect_timeout_seconds,
        read_timeout=cfg.read_timeout_seconds,
        max_response_bytes=cfg.max_response_bytes,
        allow_private=list(cfg.allow_private),
    )
    error, message, status, _, answer = send_http(
        target,
        msg_id,
        body,
        per_job=False,
        secrets=secrets,
        allowed_hosts=list(cfg.allowed_hosts),
        resolver=system_resolver,
        limits=limits,
        now=now,
    )
    click.echo(f"webhook-id: {msg_id}")
    if status is not None:
        click.echo(f"HTTP {status}")
        click.echo(answer.decode("utf-8", "replace")[:2000])
    if error is not None:
        click.echo(f"error: {error}: {message}", err=True)
        sys.exit(1)


@webhook.command(name="ls")
@click.argument("job_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_deliveries(ctx: click.Context, job_id: str | None, as_json: bool) -> None:
    """Deliveries of JOB_ID (pending, delivered, failed), or the outbox totals."""
    outbox = Outbox(SpoolLayout(_settings(ctx).spool_dir))
    if job_id is None:
        counts = outbox.counts()
        click.echo(
            json.dumps(counts) if as_json else " ".join(f"{k}={v}" for k, v in counts.items())
        )
        return
    rows = [
        {
            "status": label,
            "webhookId": record.id if record else None,
            "event": record.event if record else None,
            "sequence": record.sequence if record else None,
            "target": record.target if record else None,
            "attempts": state.attempts if state else 0,
            "lastError": state.last_error if state else None,
            "nextAttemptAt": (
                state.next_attempt_at.isoformat() if state and state.next_attempt_at else None
            ),
        }
        for label, record, state in outbox.for_job(job_id)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['sequence']:>3} {row['event']:<10} {row['target']:<9} {row['status']:<10} "
            f"attempts={row['attempts']} {row['lastError'] or ''}"
        )
