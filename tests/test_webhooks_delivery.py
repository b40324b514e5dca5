"""WebhookSink against real HTTP receivers on 127.0.0.1: statuses written with the real
write_status into a temporary spool, real threads, real sockets, real signatures."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhook_receiver import Answer, Receiver

from spooler.config import Settings, WebhookSettings
from spooler.errors import ErrorCode
from spooler.layout import SpoolLayout
from spooler.metrics import collect_snapshot, render_metrics
from spooler.spool import ensure_layout, write_status
from spooler.status import ErrorInfo, JobStatus, OutputInfo, State, new_status, transition, utcnow
from spooler.webhooks import WebhookSink
from spooler.webhooks.outbox import Outbox, Outcome
from spooler.webhooks.policy import DeliveryError
from spooler.webhooks.sink import send_http
from spooler.webhooks.transport import HttpLimits

SECRET = "whsec_" + base64.b64encode(b"spooler-webhook-test-secret-1").decode()
FAST = {"retry_schedule_seconds": [0.1, 0.1, 0.1], "jitter": 0.0, "recover_seconds": 0.2}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def layout(tmp_path: Path) -> SpoolLayout:
    layout = SpoolLayout(tmp_path / "spool")
    ensure_layout(layout)
    return layout


@pytest.fixture
def make_sink(layout: SpoolLayout) -> Iterator[Callable[..., WebhookSink]]:
    sinks: list[WebhookSink] = []

    def make(resolver: Any = None, start: bool = True, **webhooks: Any) -> WebhookSink:
        options = {"secrets": [SECRET], **FAST, **webhooks}
        settings = Settings(spool_dir=layout.root, webhooks=WebhookSettings(**options))
        kwargs = {"resolver": resolver} if resolver else {}
        sink = WebhookSink(settings, layout, **kwargs)
        sinks.append(sink)
        if start:
            sink.start()
        return sink

    yield make
    for sink in sinks:
        sink.stop()


def finish_job(
    layout: SpoolLayout,
    job_id: str,
    state: State = State.SUCCEEDED,
    job: dict[str, Any] | bytes | None = None,
) -> JobStatus:
    """A job folder whose final status was written by the real write_status."""
    now = utcnow()
    layout.job_dir(job_id).mkdir(parents=True)
    raw = job if isinstance(job, bytes) else json.dumps(job or {"kind": "testpattern"}).encode()
    layout.job_file(job_id).write_bytes(raw)
    status = new_status(
        job_id,
        State.QUEUED,
        now=now,
        submitted_at=now,
        worker=None,
        max_attempts=3,
        kind="testpattern",
        metadata={"projectId": "p-42"},
    )
    status = transition(status, State.RUNNING, now=now)
    if state is State.SUCCEEDED:
        status = transition(
            status,
            state,
            now=utcnow(),
            outputs=[
                OutputInfo(
                    path="out.mp4", size_bytes=123, duration_seconds=2.0, mime_type="video/mp4"
                )
            ],
        )
    else:
        status = transition(
            status,
            state,
            now=utcnow(),
            error=ErrorInfo(code=ErrorCode.FFMPEG_FAILED, message="boom"),
        )
    write_status(layout, status)
    return status


def outcome(layout: SpoolLayout, kind: str, timeout: float = 10.0) -> list[Outcome]:
    folder = getattr(Outbox(layout), kind)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [Outcome.model_validate_json(p.read_bytes()) for p in folder.glob("*.json")]
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"nothing in outbox/{kind} within {timeout} s")


def test_a_signed_event_is_delivered_and_a_tampered_body_fails(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    # Given a daemon-wide endpoint allow-listed for http on loopback
    sink = make_sink(url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"])
    # When a job's final status is written
    status = finish_job(layout, "job-1")
    sink.status_written(None, status)
    # Then the receiver gets one signed job.succeeded that verifies
    (request,) = receiver.wait(1)
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["jobId"] == "job-1" and payload["data"]["sequence"] == 3
    assert payload["data"]["outputs"][0]["sizeBytes"] == 123
    assert payload["data"]["metadata"] == {"projectId": "p-42"}
    assert request.headers["webhook-id"].startswith("evt_")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"job-1", b"job-2"), request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another secret").decode()).verify(
            request.body, request.headers
        )
    (done,) = outcome(layout, "delivered")
    assert done.state.attempts == 1 and done.state.last_status == 200
    assert not any(Outbox(layout).pending.iterdir())
    # And the metrics file shows it
    text = render_metrics(collect_snapshot(layout))
    assert 'spooler_webhook_deliveries{state="delivered"} 1' in text
    assert 'spooler_webhook_deliveries{state="pending"} 0' in text


def test_500_then_429_with_retry_after_then_success_keeps_the_id(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.on("/hook", Answer(500), Answer(429, {"Retry-After": "1"}))
    sink = make_sink(url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"])
    sink.status_written(None, finish_job(layout, "job-1", State.FAILED))
    first, second, third = receiver.wait(3, timeout=20)
    assert len({r.headers["webhook-id"] for r in (first, second, third)}) == 1
    assert first.body == second.body == third.body
    # The schedule says 0.1 s; the receiver asked for 1 s after the 429.
    assert 0.05 < second.at - first.at < 0.9
    assert third.at - second.at >= 0.95
    assert json.loads(third.body)["data"]["error"]["code"] == "ffmpeg_failed"
    (done,) = outcome(layout, "delivered")
    assert done.state.attempts == 3


def test_a_receiver_slower_than_the_read_timeout_is_retried(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.on("/hook", Answer(200, delay=2.0))
    sink = make_sink(
        url=receiver.url(),
        allowed_hosts=["127.0.0.1"],
        allow_private=["127.0.0.1"],
        read_timeout_seconds=0.5,
    )
    sink.status_written(None, finish_job(layout, "job-1"))
    first, second = receiver.wait(2, timeout=10)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    (done,) = outcome(layout, "delivered")
    assert done.state.attempts == 2


def test_410_stops_and_an_exhausted_schedule_gives_up(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.on("/gone", Answer(410))
    receiver.on("/down", *[Answer(503)] * 10)
    make_sink(
        url=receiver.url("/gone"), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"]
    ).status_written(None, finish_job(layout, "job-1"))
    (failed,) = outcome(layout, "failed")
    assert failed.state.last_error is not None and failed.state.last_error.startswith("gone")
    time.sleep(0.5)
    assert len(receiver.at("/gone")) == 1  # never again
    other = SpoolLayout(layout.root.parent / "spool2")
    ensure_layout(other)
    settings = Settings(
        spool_dir=other.root,
        webhooks=WebhookSettings(
            url=receiver.url("/down"),
            secrets=[SECRET],
            allowed_hosts=["127.0.0.1"],
            allow_private=["127.0.0.1"],
            **FAST,
        ),
    )
    sink = WebhookSink(settings, other)
    sink.start()
    try:
        sink.status_written(None, finish_job(other, "job-2"))
        (given_up,) = outcome(other, "failed")
        assert given_up.state.attempts == 4  # the first try and three retries
        assert given_up.state.last_error is not None
        assert given_up.state.last_error.startswith("expired")
    finally:
        sink.stop()


def test_a_redirect_is_not_followed(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.on("/hook", Answer(307, {"Location": receiver.url("/elsewhere")}))
    make_sink(
        url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"]
    ).status_written(None, finish_job(layout, "job-1"))
    receiver.wait(2, path="/hook")  # retried at the same URL after the redirect
    assert receiver.at("/elsewhere") == []
    (done,) = outcome(layout, "delivered")
    assert done.state.attempts == 2


def test_per_job_callbacks_need_the_allow_list_and_a_public_address(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    # Given a resolver that answers like a rebinding or metadata-pointing DNS server
    answers = {
        "loop.hooks.test": ["127.0.0.1"],
        "meta.hooks.test": ["169.254.169.254"],
        "ok.receiver.test": ["127.0.0.1"],
    }
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return answers[host]

    sink = make_sink(
        resolver=resolver,
        allowed_hosts=["*.hooks.test", "ok.receiver.test"],
        allow_private=["ok.receiver.test"],
    )
    port = receiver.port
    jobs = {
        "outside": f"http://127.0.0.1:{port}/outside",
        "loop": f"http://loop.hooks.test:{port}/loop",
        "meta": f"http://meta.hooks.test:{port}/meta",
        "ok": f"http://ok.receiver.test:{port}/ok",
    }
    for job_id, url in jobs.items():
        sink.status_written(
            None,
            finish_job(
                layout,
                job_id,
                job={"kind": "testpattern", "callback": {"url": url, "events": ["succeeded"]}},
            ),
        )
    # Then only the allow-listed host with an allowed address is reached (connected to the
    # address the resolver gave, with the name in the Host header)
    (ok,) = receiver.wait(1, path="/ok")
    assert ok.headers["host"] == f"ok.receiver.test:{port}"
    Webhook(SECRET).verify(ok.body, ok.headers)
    deadline = time.monotonic() + 10
    while len(list(Outbox(layout).failed.glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = {o.record.job_id: o.state.last_error or "" for o in outcome(layout, "failed")}
    assert errors["outside"].startswith("not_allowed: host '127.0.0.1'")
    assert errors["loop"].startswith("private_address: loop.hooks.test resolves to 127.0.0.1")
    assert errors["meta"].startswith("private_address: meta.hooks.test resolves to 169.254")
    assert [r.path for r in receiver.requests] == ["/ok"]
    assert "outside" not in " ".join(resolved)  # refused before any DNS look-up


def test_recovery_rebuilds_an_event_whose_record_was_never_written(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    # Given webhooks enabled on this spool, then a daemon that died right after writing a
    # final status (status_written never called)
    make_sink(
        url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"], start=False
    ).start()
    status = finish_job(layout, "job-1", State.CANCELLED)
    # When a sink starts on the spool, its recovery finds the event
    receiver.wait(1)
    (request,) = receiver.requests
    assert json.loads(request.body)["type"] == "job.cancelled"
    # and a second recovery pass, a status_written and a restart add nothing
    time.sleep(0.5)
    sink = make_sink(url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"])
    sink.status_written(None, status)
    assert sink.recover() == 0
    time.sleep(0.5)
    assert len(receiver.requests) == 1


def test_a_deleted_jobs_undelivered_event_is_still_delivered(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.on("/hook", *[Answer(500)] * 3)
    sink = make_sink(
        url=receiver.url(),
        allowed_hosts=["127.0.0.1"],
        allow_private=["127.0.0.1"],
        retry_schedule_seconds=[0.5] * 5,
    )
    finish_job(layout, "job-1")
    # The delete path calls before_remove, then removes the folder (no status_written at all)
    sink.before_remove("job-1")
    os.rename(layout.job_dir("job-1"), layout.trash / "job-1.x")
    import shutil

    shutil.rmtree(layout.trash / "job-1.x")
    got = receiver.wait(4, timeout=15)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    (done,) = outcome(layout, "delivered")
    assert done.record.job_id == "job-1"


def test_the_command_hook_gets_the_payload_and_its_exit_code_counts(
    layout: SpoolLayout, tmp_path: Path, make_sink: Callable[..., WebhookSink]
) -> None:
    script = tmp_path / "hook.py"
    seen = tmp_path / "seen"
    script.write_text(
        textwrap.dedent(f"""
        import sys, pathlib
        seen = pathlib.Path({str(seen)!r})
        first = not seen.exists()
        seen.open("a").write(sys.argv[1] + " " + sys.argv[2] + " " + sys.stdin.read() + "\\n")
        sys.exit(3 if first else 0)
    """)
    )
    make_sink(
        on_finish=[sys.executable, str(script), "{jobId}", "{state}"], on_finish_timeout_seconds=10
    ).status_written(None, finish_job(layout, "job-9"))
    (done,) = outcome(layout, "delivered")
    assert done.record.target == "command" and done.state.attempts == 2
    lines = seen.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    job_id, state, body = lines[0].split(" ", 2)
    assert (job_id, state) == ("job-9", "succeeded")
    assert json.loads(body)["type"] == "job.succeeded"


def test_a_hook_over_its_timeout_is_killed(
    layout: SpoolLayout, make_sink: Callable[..., WebhookSink]
) -> None:
    started = time.monotonic()
    make_sink(
        on_finish=["sleep", "30"], on_finish_timeout_seconds=0.3, retry_schedule_seconds=[]
    ).status_written(None, finish_job(layout, "job-1"))
    (failed,) = outcome(layout, "failed")
    assert time.monotonic() - started < 5
    assert failed.state.last_error is not None and "timed out" in failed.state.last_error


def test_kill_9_with_a_delivery_in_flight_then_delivered_after_restart_with_the_same_id(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    # Given webhooks enabled on this spool before the job ended, and a process whose sink
    # is posting its event to a receiver that holds the request
    Outbox(layout).ensure()
    (Outbox(layout).root / "since.json").write_text('{"since": "2026-01-01T00:00:00Z"}')
    receiver.on("/hook", Answer(200, delay=30))
    finish_job(layout, "job-1")
    code = textwrap.dedent(f"""
        import time
        from spooler.config import Settings, WebhookSettings
        from spooler.layout import SpoolLayout
        from spooler.spool import read_status
        from spooler.webhooks import WebhookSink
        from pathlib import Path
        layout = SpoolLayout(Path({str(layout.root)!r}))
        settings = Settings(spool_dir=layout.root, webhooks=WebhookSettings(
            url={receiver.url()!r}, secrets=[{SECRET!r}], allowed_hosts=["127.0.0.1"],
            allow_private=["127.0.0.1"], read_timeout_seconds=60))
        sink = WebhookSink(settings, layout)
        sink.start()
        sink.status_written(None, read_status(layout, "job-1"))
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        (first,) = receiver.wait(1, timeout=20)
    finally:
        # When it is killed -9 before the receiver answered
        proc.kill()
        proc.wait(10)
    assert list(Outbox(layout).pending.glob("*.operator.json"))
    # Then a restarted sink delivers the same event, with the same id and body
    make_sink(url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"])
    second = receiver.wait(2, timeout=15)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body
    (done,) = outcome(layout, "delivered")
    assert done.record.id == first.headers["webhook-id"]


def test_a_per_job_callback_without_any_secret_is_given_up_visibly(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    sink = make_sink(secrets=[], allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"])
    sink.status_written(
        None,
        finish_job(
            layout, "job-1", job={"kind": "testpattern", "callback": {"url": receiver.url("/job")}}
        ),
    )
    (failed,) = outcome(layout, "failed")
    assert failed.state.last_error is not None and failed.state.last_error.startswith("no_secret")
    assert receiver.requests == []


def planted_record(record_id: str, target: str, **fields: Any) -> str:
    """An outbox record as someone who can write the spool would plant it (JSON text)."""
    return json.dumps(
        {
            "id": record_id,
            "target": target,
            "jobId": "job-1",
            "event": "succeeded",
            "sequence": 3,
            "eventAt": "2026-11-30T08:00:00Z",
            "createdAt": "2026-11-30T08:00:00Z",
            "body": "{}",
            **fields,
        }
    )


def test_records_planted_in_the_outbox_are_never_sent_or_run(
    layout: SpoolLayout,
    receiver: Receiver,
    tmp_path: Path,
    make_sink: Callable[..., WebhookSink],
) -> None:
    # Given someone who can write the spool plants records: a forged event for the
    # operator's endpoint, and a command record with an argv of their own
    proof = tmp_path / "pwned"
    outbox = Outbox(layout)
    outbox.ensure()
    forged = '{"type":"job.succeeded","forged":true}'
    (outbox.pending / "evt_forged.operator.json").write_text(
        planted_record("evt_forged", "operator", url=receiver.url(), body=forged)
    )
    (outbox.pending / "evt_forged.command.json").write_text(
        planted_record("evt_forged", "command", command=["touch", str(proof)], body=forged)
    )
    # When a sink with a secret, a URL and a hook starts on the spool
    make_sink(
        url=receiver.url(),
        allowed_hosts=["127.0.0.1"],
        allow_private=["127.0.0.1"],
        on_finish=["true"],
    )
    # Then neither is sent nor run: both are given up as unauthentic
    deadline = time.monotonic() + 10
    while len(list(outbox.failed.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = sorted(o.state.last_error or "" for o in outcome(layout, "failed"))
    assert len(errors) == 2 and all(e.startswith("unauthentic_record") for e in errors)
    assert receiver.requests == [] and not proof.exists()


def test_jobs_that_ended_before_webhooks_were_enabled_are_not_announced(
    layout: SpoolLayout, receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    # Given a spool with a job finished before any daemon had webhooks on
    old = finish_job(layout, "old-job")
    time.sleep(0.05)
    # When a sink starts (writing outbox/since.json) and sees it
    sink = make_sink(url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"])
    sink.status_written(None, old)
    sink.status_written(None, finish_job(layout, "new-job"))
    # Then only the job that ended afterwards is announced
    (request,) = receiver.wait(1)
    assert json.loads(request.body)["data"]["jobId"] == "new-job"
    time.sleep(0.6)
    assert len(receiver.requests) == 1


def test_a_record_whose_content_names_another_file_is_set_aside_not_followed(
    layout: SpoolLayout,
    receiver: Receiver,
    tmp_path: Path,
    make_sink: Callable[..., WebhookSink],
) -> None:
    # Given a file outside the outbox, and records planted in it whose ids lead there or
    # name another record than their own file
    victim = tmp_path / "victim.operator.json"
    victim.write_text("keep me")
    outbox = Outbox(layout)
    outbox.ensure()
    escape = os.path.relpath(tmp_path / "victim", outbox.pending)
    (outbox.pending / "planted.operator.json").write_text(
        planted_record(escape, "operator", url=receiver.url())
    )
    (outbox.pending / "copy.json").write_text(
        planted_record("evt_other", "operator", url=receiver.url())
    )
    # When a sink delivers the outbox
    make_sink(url=receiver.url(), allowed_hosts=["127.0.0.1"], allow_private=["127.0.0.1"])
    deadline = time.monotonic() + 10
    while outbox.pending_names() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Then both were set aside under their own names; nothing was sent, nothing outside
    # the outbox touched
    assert outbox.pending_names() == []
    assert sorted(p.name for p in outbox.failed.glob("*.unreadable")) == [
        "copy.unreadable",
        "planted.operator.unreadable",
    ]
    assert victim.read_text() == "keep me" and receiver.requests == []


def test_an_answer_dribbled_byte_by_byte_times_out_as_a_whole() -> None:
    # Given a receiver that sends its answer one byte every 0.3 s (each read within the
    # read timeout, the whole answer far past it)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def dribble() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        with contextlib.suppress(OSError):
            for byte in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 20:
                time.sleep(0.3)
                conn.sendall(bytes([byte]))
        conn.close()

    threading.Thread(target=dribble, daemon=True).start()
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    # When an event is sent to it with a read timeout of 1 s
    started = time.monotonic()
    error, message, _ = send_http(
        f"http://127.0.0.1:{port}/", "evt_x", "{}", per_job=False, secrets=[secret],
        allowed_hosts=["127.0.0.1"], resolver=lambda host, port: ["127.0.0.1"],
        limits=HttpLimits(read_timeout=1.0, allow_private=["127.0.0.1"]),
    )[:3]  # fmt: skip
    # Then the attempt ends as a timeout after about that second, not the answer's ~9 s
    assert error == DeliveryError.TIMEOUT, message
    assert time.monotonic() - started < 3
    server.close()
