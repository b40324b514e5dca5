"""A webhook announcing an output published to S3 carries its s3:// uri (receivers presign
it on demand), never a URL with a signature; local outputs keep output_base_url's URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from spooler.status import OutputInfo, State, new_status, transition
from spooler.webhooks.events import events_in, payload_for, render_body

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_s3_output_keeps_its_uri_local_output_gets_the_base_url() -> None:
    queued = new_status("job-1", State.QUEUED, now=T0, submitted_at=T0, worker=None,
                        max_attempts=1, kind="export")  # fmt: skip
    running = transition(queued, State.RUNNING, now=T0 + timedelta(seconds=1))
    remote = OutputInfo(path="out.mp4", size_bytes=10, uri="s3://b-1/exports/job-1/out.mp4",
                        etag='"abc-1"', checksum="xyz-1")  # fmt: skip
    local = OutputInfo(path="poster.jpg", size_bytes=5, role="poster")
    done = transition(running, State.SUCCEEDED, now=T0 + timedelta(seconds=2),
                      outputs=[remote, local])  # fmt: skip
    event = events_in(done)[-1]
    body = json.loads(render_body(payload_for(done, event, "https://cdn.example/jobs/")))
    first, second = body["data"]["outputs"]
    assert first["uri"] == "s3://b-1/exports/job-1/out.mp4" and first["etag"] == '"abc-1"'
    assert second["uri"] == "https://cdn.example/jobs/job-1/poster.jpg"
