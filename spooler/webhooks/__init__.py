"""Outbound job events: signed webhooks and a local command hook (docs/webhooks.md).

The daemon's one entry point is `WebhookSink` (sink.py). The rest, by job:
events.py (pure: events and payload from a status), policy.py (pure: URL/address rules,
retry schedule), signing.py (Standard Webhooks), outbox.py (durable records),
transport.py (HTTP to a checked address; the command hook), cli.py (`spooler webhook`).
"""

from spooler.webhooks.sink import CAPABILITY, WebhookSink

__all__ = ["CAPABILITY", "WebhookSink"]
