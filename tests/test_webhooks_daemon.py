"""Webhooks end to end: a real `spooler run`, real ffmpeg jobs, a real receiver on loopback.

The daemon builds its WebhookSink itself: a sink of the Reporter (every status write),
Retention's before_delete, started and stopped with the loop."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from support import DaemonProcess, Spool, tiny_job
from webhook_receiver import Answer, Receiver

SECRET = "whsec_" + base64.b64encode(b"spooler-daemon-webhook-secret").decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def hook_settings(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "SPOOLER_WEBHOOKS__URL": receiver.url("/hook"),
        "SPOOLER_WEBHOOKS__SECRETS": json.dumps([SECRET]),
        "SPOOLER_WEBHOOKS__ALLOWED_HOSTS": '["127.0.0.1"]',
        "SPOOLER_WEBHOOKS__ALLOW_PRIVATE": '["127.0.0.1"]',
        "SPOOLER_WEBHOOKS__RETRY_SCHEDULE_SECONDS": "[0.3, 0.3, 0.3, 0.3]",
        "SPOOLER_WEBHOOKS__JITTER": "0",
        "SPOOLER_WEBHOOKS__RECOVER_SECONDS": "0.5",
        **extra,
    }


def payloads(requests: list[Any]) -> list[dict[str, Any]]:
    return [Webhook(SECRET).verify(r.body, r.headers) for r in requests]


def test_operator_and_per_job_endpoints_and_an_unreadable_job(
    spool: Spool, receiver: Receiver, make_daemon: Callable[..., DaemonProcess]
) -> None:
    # Given a daemon with a daemon-wide endpoint that allows per-job callbacks to 127.0.0.1
    daemon = make_daemon(**hook_settings(receiver))
    # When a job with its own callback succeeds and an unreadable job file is rejected
    spool.submit(
        "good",
        tiny_job(
            callback={"url": receiver.url("/job"), "events": ["succeeded"]},
            metadata={"projectId": "p-1"},
        ),
    )
    spool.submit("bad", b"{not json")
    spool.submit("outside", tiny_job(callback={"url": "https://elsewhere.example/hook"}))
    spool.wait_final("good")
    spool.wait_final("bad")
    # A callback to a host outside the allow-list is refused at the claim
    outside = spool.wait_final("outside")
    assert outside["state"] == "rejected"
    (problem,) = outside["error"]["details"]["errors"]
    assert problem["path"] == "callback.url" and problem["code"] == "callback_not_allowed"
    assert "webhooks.allowed_hosts" in problem["message"]
    # Then the daemon-wide endpoint hears all three, the job's own endpoint only its own job
    by_job = {p["data"]["jobId"]: p for p in payloads(receiver.wait(3, path="/hook"))}
    assert by_job["outside"]["type"] == "job.rejected"
    assert by_job["good"]["type"] == "job.succeeded"
    assert by_job["good"]["data"]["metadata"] == {"projectId": "p-1"}
    assert by_job["good"]["data"]["outputs"][0]["mimeType"] == "video/mp4"
    assert by_job["bad"]["type"] == "job.rejected"
    assert by_job["bad"]["data"]["error"]["code"] == "invalid_json"
    (own,) = payloads(receiver.wait(1, path="/job"))
    assert own["data"]["jobId"] == "good"
    time.sleep(1.0)
    assert len(receiver.at("/job")) == 1 and len(receiver.at("/hook")) == 3
    # And the delivery state is visible through the CLI
    listed = subprocess.run(
        [sys.executable, "-m", "spooler", "webhook", "ls", "good", "--json"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = json.loads(listed.stdout)
    assert {(r["target"], r["status"]) for r in rows} == {
        ("operator", "delivered"),
        ("job", "delivered"),
    }
    assert daemon.stop() == 0


def test_kill_9_between_the_jobs_end_and_the_delivery(
    spool: Spool, receiver: Receiver, make_daemon: Callable[..., DaemonProcess]
) -> None:
    # Given a receiver that holds the first request without answering
    receiver.on("/hook", Answer(200, delay=30))
    daemon = make_daemon(**hook_settings(receiver, SPOOLER_WEBHOOKS__READ_TIMEOUT_SECONDS="60"))
    spool.submit("job-1", tiny_job())
    spool.wait_state("job-1", "succeeded")
    (first,) = receiver.wait(1)
    # When the daemon is killed -9 with the delivery in flight, and started again
    daemon.kill9()
    make_daemon(**hook_settings(receiver))
    # Then the event is delivered with the same id and the same body
    second = receiver.wait(2, timeout=20)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body
    assert payloads([second])[0]["type"] == "job.succeeded"


def test_a_deleted_jobs_event_is_still_delivered(
    spool: Spool, receiver: Receiver, make_daemon: Callable[..., DaemonProcess]
) -> None:
    # Given a receiver that fails the first three attempts
    receiver.on("/hook", Answer(500), Answer(500), Answer(503))
    make_daemon(**hook_settings(receiver, SPOOLER_WEBHOOKS__RETRY_SCHEDULE_SECONDS="[1, 1, 1]"))
    spool.submit("job-1", tiny_job())
    spool.wait_state("job-1", "succeeded")
    receiver.wait(1)
    # When the job is deleted before its event got through
    (spool.layout.inbox / "job-1.delete").write_text("")
    deadline = time.monotonic() + 15
    while spool.layout.job_dir("job-1").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not spool.layout.job_dir("job-1").exists()
    assert len(receiver.requests) < 4, "deleted too late to show anything"
    # Then it is delivered anyway (the outbox lives outside the job folder)
    got = receiver.wait(4, timeout=20)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert payloads(got[-1:])[0]["data"]["jobId"] == "job-1"


def test_started_events_are_opt_in_and_ordered_by_sequence(
    spool: Spool, receiver: Receiver, make_daemon: Callable[..., DaemonProcess]
) -> None:
    # Given a daemon-wide endpoint that asked for `started` too
    make_daemon(**hook_settings(receiver, SPOOLER_WEBHOOKS__EVENTS='["started", "succeeded"]'))
    spool.submit("job-1", tiny_job())
    # Then both arrive, ordered by their sequence
    got = payloads(receiver.wait(2))
    assert {p["type"]: p["data"]["sequence"] for p in got} == {"job.started": 2, "job.succeeded": 3}
    started = next(p for p in got if p["type"] == "job.started")
    assert started["data"]["state"] == "running" and started["data"]["outputs"] == []
