"""The pure rooms of the webhooks package: events from statuses, the URL and address rules,
the retry schedule, and signatures against the Standard Webhooks spec's published vector."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from spooler.config import WebhookSettings
from spooler.errors import ConfigError, JobError
from spooler.kinds import parse_job
from spooler.status import ErrorInfo, JobStatus, OutputInfo, State, new_status, transition
from spooler.webhooks.events import event_id, events_in, new_events, payload_for, render_body
from spooler.webhooks.policy import (
    DeliveryError,
    Endpoint,
    address_problem,
    callback_problem,
    classify_status,
    host_matches,
    parse_endpoint,
    parse_retry_after,
    retry_delay,
)
from spooler.webhooks.signing import load_secrets, signature, signed_headers

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _run(job_id: str = "job-1", final: State = State.SUCCEEDED) -> list[JobStatus]:
    """The statuses a job goes through: queued, running, retry, running again, final."""
    s0 = new_status(
        job_id,
        State.QUEUED,
        now=T0,
        submitted_at=T0,
        worker=None,
        max_attempts=3,
        kind="testpattern",
        metadata={"projectId": "p-42"},
    )
    s1 = transition(s0, State.RUNNING, now=T0 + timedelta(seconds=1))
    s2 = transition(
        s1, State.QUEUED, now=T0 + timedelta(seconds=2), reason="ffmpeg_failed", attempt=2
    )
    s3 = transition(s2, State.RUNNING, now=T0 + timedelta(seconds=3))
    changes: dict[str, object] = {}
    if final is State.SUCCEEDED:
        changes["outputs"] = [
            OutputInfo(path="out.mp4", size_bytes=10, duration_seconds=2.0, mime_type="video/mp4")
        ]
    else:
        changes["error"] = ErrorInfo(code="ffmpeg_failed", message="boom")
    s4 = transition(s3, final, now=T0 + timedelta(seconds=4), **changes)
    return [s0, s1, s2, s3, s4]


def test_events_carry_their_history_index_as_sequence() -> None:
    statuses = _run()
    names = [(e.name, e.sequence) for e in events_in(statuses[-1])]
    assert names == [("started", 2), ("started", 4), ("succeeded", 5)]
    # Each write announces only what it added; progress writes add nothing.
    assert [e.name for e in new_events(statuses[2], statuses[3])] == ["started"]
    assert new_events(statuses[3], statuses[3]) == []
    assert [e.name for e in new_events(statuses[3], statuses[4])] == ["succeeded"]


def test_the_event_id_is_stable_and_tells_reused_ids_apart() -> None:
    first = _run()[-1]
    assert event_id(first, 5) == event_id(_run()[-1], 5)
    assert event_id(first, 5) != event_id(first, 4)
    reused = first.model_copy(update={"claimed_at": T0 + timedelta(days=1)})
    assert event_id(reused, 5) != event_id(first, 5)


def test_payload_of_a_final_and_of_a_started_event() -> None:
    status = _run()[-1]
    started, _, done = events_in(status)
    final = json.loads(render_body(payload_for(status, done, "https://cdn.example/jobs/")))
    assert final["type"] == "job.succeeded"
    assert final["data"]["sequence"] == 5 and final["data"]["attempt"] == 2
    assert final["data"]["metadata"] == {"projectId": "p-42"}
    assert final["data"]["outputs"][0]["uri"] == "https://cdn.example/jobs/job-1/out.mp4"
    assert final["data"]["outputs"][0]["mimeType"] == "video/mp4"
    early = json.loads(render_body(payload_for(status, started, None)))
    assert early["type"] == "job.started" and early["data"]["state"] == "running"
    assert early["data"]["outputs"] == [] and early["data"]["finishedAt"] is None
    failed = json.loads(render_body(payload_for(_run(final=State.FAILED)[-1], done, None)))
    assert failed["data"]["error"]["code"] == "ffmpeg_failed"


def test_signature_matches_the_spec_vector() -> None:
    # The example of the Standard Webhooks specification (and of its reference libraries).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    when = datetime.fromtimestamp(1614265330, UTC)
    sig = signature([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", when, '{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    old, new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + "QUJDREVGR0hJSktMTU5PUA=="
    headers = signed_headers([new, old], "evt_1", '{"a":1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify('{"a":2}', headers)


@pytest.mark.parametrize(
    ("host", "patterns", "expected"),
    [
        ("hooks.example.com", ["hooks.example.com"], True),
        ("HOOKS.example.com.", ["hooks.example.com"], True),
        ("a.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evil-example.com", ["*.example.com"], False),
        ("example.com.evil.net", ["example.com"], False),
    ],
)
def test_host_allow_list(host: str, patterns: list[str], expected: bool) -> None:
    assert host_matches(host, patterns) is expected


def test_urls_a_job_may_and_may_not_name() -> None:
    allowed = ["hooks.example.com", "web"]
    ok = parse_endpoint("https://hooks.example.com/x?y=1", per_job=True, allowed_hosts=allowed)
    assert ok == Endpoint("https", "hooks.example.com", 443, "/x?y=1")
    assert str(
        parse_endpoint("https://other.example/x", per_job=True, allowed_hosts=allowed)
    ).startswith("not_allowed")
    # http:// only for an allow-listed host, for the operator's URL too.
    assert isinstance(
        parse_endpoint("http://web:3000/h", per_job=True, allowed_hosts=allowed), Endpoint
    )
    assert str(
        parse_endpoint("http://other.example/h", per_job=False, allowed_hosts=allowed)
    ).startswith("not_allowed")
    assert isinstance(
        parse_endpoint("https://other.example/h", per_job=False, allowed_hosts=[]), Endpoint
    )
    for bad in (
        "ftp://hooks.example.com/",
        "https://u:p@hooks.example.com/",
        "https:///x",
        "https://hooks.example.com:99999/",
    ):
        assert str(parse_endpoint(bad, per_job=False, allowed_hosts=allowed)).startswith("bad_url")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.1.2.3",
        "172.17.0.2",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    problem = address_problem(address, "hooks.example.com", [])
    assert problem is not None and problem.startswith("private_address")
    assert "allow_private" in problem


def test_allow_private_by_name_or_network() -> None:
    assert address_problem("93.184.216.34", "example.com", []) is None
    assert address_problem("172.18.0.5", "web", ["web"]) is None
    assert address_problem("127.0.0.1", "receiver.test", ["127.0.0.0/8"]) is None
    assert address_problem("127.0.0.1", "receiver.test", ["10.0.0.0/8", "web"]) is not None


def test_retry_schedule_jitter_and_retry_after() -> None:
    schedule = [5.0, 300.0, 1800.0]
    assert retry_delay(1, schedule, jitter=0.2, rand=0.5) == 5.0
    assert retry_delay(2, schedule, jitter=0.2, rand=0.0) == pytest.approx(240.0)
    assert retry_delay(2, schedule, jitter=0.2, rand=0.999999) == pytest.approx(360.0, rel=1e-4)
    assert retry_delay(4, schedule, jitter=0.2, rand=0.5) is None
    assert retry_delay(1, schedule, jitter=0, rand=0.5, retry_after=120) == 120
    assert retry_delay(1, schedule, jitter=0, rand=0.5, retry_after=9e9, max_retry_after=60) == 60
    assert retry_delay(2, schedule, jitter=0, rand=0.5, retry_after=1) == 300


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Mon, 30 Nov 2026 08:02:00 GMT", now) == 120
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_answers() -> None:
    assert classify_status(204) is None
    assert classify_status(410) is DeliveryError.GONE
    assert classify_status(302) is DeliveryError.REDIRECT
    assert classify_status(500) is DeliveryError.HTTP_STATUS
    assert classify_status(429) is DeliveryError.HTTP_STATUS


def test_callback_check_for_claim_time_validation() -> None:
    assert callback_problem("https://hooks.example.com/x", ["hooks.example.com"]) is None
    problem = callback_problem("https://evil.example/x", ["hooks.example.com"])
    assert problem is not None and "webhooks.allowed_hosts" in problem


def test_settings_refuse_a_url_without_a_secret_and_bad_secrets() -> None:
    with pytest.raises(ValidationError, match=r"needs webhooks\.secrets"):
        WebhookSettings(url="https://hooks.example.com/x")
    WebhookSettings(allowed_hosts=["web"])  # an image may ship the allow-list alone
    with pytest.raises(ConfigError, match="whsec_"):
        load_secrets(WebhookSettings(secrets=["not-a-secret"]))
    with pytest.raises(ConfigError, match="is not valid"):
        load_secrets(WebhookSettings(secrets=["whsec_"]))


def test_a_secrets_file_without_a_secret_stops_the_start(tmp_path: Path) -> None:
    # Given a secrets file that arrived empty (a credential that failed to load)
    empty = tmp_path / "secrets"
    empty.write_text("\n\n")
    settings = WebhookSettings(url="https://hooks.example.com/x", secrets_file=empty)
    # Then loading it is a configuration error, not a daemon that gives every event up
    with pytest.raises(ConfigError, match="holds no secret"):
        load_secrets(settings)


def test_a_job_callback_must_be_an_http_url_with_known_events() -> None:
    ok = b'{"kind":"testpattern","callback":{"url":"https://h.example/x"}}'
    assert parse_job(ok)[0].callback is not None
    for bad in (
        b'{"kind":"testpattern","callback":{"url":"ftp://h.example/x"}}',
        b'{"kind":"testpattern","callback":{"url":"https://h.example/x","events":["x"]}}',
        b'{"kind":"testpattern","callback":{"url":"https://h.example/x","secret":"s"}}',
    ):
        with pytest.raises(JobError) as info:
            parse_job(bad)
        assert info.value.code == "invalid_job"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/café",
        "https://hööks.example.com/x",
        "https://" + "a" * 70 + ".example.com/x",
        "https://a..example.com/x",
    ],
)
def test_urls_no_request_can_carry_are_refused_as_bad_urls(url: str) -> None:
    # A request line and Host header are ASCII, and DNS labels are 1-63 characters: such
    # a URL would fail at every attempt and never be given up
    problem = callback_problem(url, ["*.example.com", "hooks.example.com"])
    assert problem is not None and problem.startswith("bad_url"), problem
