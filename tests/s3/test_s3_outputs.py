"""Outputs to S3 (a real server on loopback): multipart with checksums, the UploadId
journalled before the first part, no orphaned upload after a cancel, a cut connection or
kill -9 (recovery completes or aborts it), no duplicate object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from s3_support import CuttingProxy, part_digests

from spooler.config import S3Settings
from spooler.errors import ErrorCode, JobError
from spooler.layout import SpoolLayout
from spooler.s3.client import make_client
from spooler.s3.outputs import (
    RoutedOutputs,
    S3Uploads,
    composite_sha256,
    part_ranges,
    same_checksum,
)
from spooler.status import JobStatus, OutputInfo, PendingPublish, State
from spooler.storage import JobFolderOutputs

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART = 5 * 1024 * 1024  # S3's minimum part size
JOB = "job-1"


def store(settings: S3Settings, spool: Path) -> RoutedOutputs:
    layout = SpoolLayout(spool)
    layout.job_dir(JOB).mkdir(parents=True, exist_ok=True)
    return RoutedOutputs(JobFolderOutputs(layout), S3Uploads(make_client(settings), settings))


def verified_temp(spool: Path, size: int, name: str = ".tmp-out.mp4") -> Path:
    temp = SpoolLayout(spool).job_dir(JOB) / name
    temp.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(os.urandom(size))
    return temp


def leftovers(s3: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def keys(s3: S3Client, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def info_for(bucket: str, temp: Path, name: str = "out.mp4") -> OutputInfo:
    uri = f"s3://{bucket}/exports/{JOB}/{name}"
    return OutputInfo(path=name, size_bytes=temp.stat().st_size, uri=uri)


def test_pure_parts_and_checksum() -> None:
    assert part_ranges(0, PART) == [(0, 0)]
    assert part_ranges(2 * PART + 1, PART) == [(0, PART), (PART, PART), (2 * PART, 1)]
    assert composite_sha256([b"\0" * 32, b"\1" * 32]).endswith("-2")


def test_upload_publishes_once_with_checksum(
    s3_settings: S3Settings, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    # Given a verified 11 MiB output and its S3 destination
    settings = s3_settings.model_copy(update={"part_bytes": PART})
    outputs = store(settings, tmp_path)
    temp = verified_temp(tmp_path, 2 * PART + 12345)
    data = temp.read_bytes()
    info = info_for(bucket, temp)
    # When it is begun (UploadId to journal), then committed
    upload_id = outputs.begin(JOB, temp, info)
    assert upload_id and leftovers(s3, bucket) == [f"exports/{JOB}/out.mp4"]
    gained = outputs.commit(JOB, temp, "out.mp4")
    # Then the object is whole, once, with the checksum of the local file; nothing left over
    body = s3.get_object(Bucket=bucket, Key=f"exports/{JOB}/out.mp4")["Body"].read()
    assert body == data
    assert gained["uri"] == info.uri and gained["etag"].endswith('-3"')
    assert gained["checksum"] == composite_sha256(part_digests(data, PART))
    assert leftovers(s3, bucket) == [] and keys(s3, bucket) == [f"exports/{JOB}/out.mp4"]
    assert not temp.exists()


def test_a_refusal_other_than_403_is_a_job_error(s3_settings: S3Settings, tmp_path: Path) -> None:
    # Given an allowed destination bucket that does not exist (S3 answers 404 NoSuchBucket)
    allowed = [*s3_settings.allowed_buckets, "no-such-bucket"]
    outputs = store(s3_settings.model_copy(update={"allowed_buckets": allowed}), tmp_path)
    temp = verified_temp(tmp_path, 1000)
    # When the upload begins, then it fails as a job error naming the storage's answer, not
    # as a stray botocore exception in the job's thread
    with pytest.raises(JobError) as caught:
        outputs.begin(JOB, temp, info_for("no-such-bucket", temp))
    assert caught.value.code == ErrorCode.SOURCE_FORBIDDEN and not caught.value.transient
    assert "NoSuchBucket" in caught.value.message


def test_cancel_mid_upload_aborts(
    s3_settings: S3Settings, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    # Given an upload of three parts whose cancel check fires at the second part
    outputs = store(s3_settings.model_copy(update={"part_bytes": PART}), tmp_path)
    temp = verified_temp(tmp_path, 3 * PART)
    outputs.begin(JOB, temp, info_for(bucket, temp))
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise JobError(ErrorCode.CANCELLED, "cancel requested")

    # When it is committed, then the cancel stops it and no upload or object is left
    with pytest.raises(JobError):
        outputs.commit(JOB, temp, "out.mp4", check)
    assert leftovers(s3, bucket) == [] and keys(s3, bucket) == []


def test_connection_cut_mid_upload_is_retried(
    s3_endpoint: str, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    # Given the server behind a proxy that cuts the first two uploads 1 MB in
    port = int(s3_endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cuts=2, after_bytes=1_000_000, uploads=True)
    try:
        settings = S3Settings(
            endpoint_url=f"http://127.0.0.1:{proxy.port}", allowed_buckets=[bucket],
            part_bytes=PART, attempts=4,
        )  # fmt: skip
        outputs = store(settings, tmp_path)
        temp = verified_temp(tmp_path, 2 * PART)
        data = temp.read_bytes()
        outputs.begin(JOB, temp, info_for(bucket, temp))
        # When it is committed
        outputs.commit(JOB, temp, "out.mp4")
    finally:
        proxy.close()
    # Then the cuts were retried: one whole object, no duplicate, no orphan
    assert proxy.cut == 2
    assert s3.get_object(Bucket=bucket, Key=f"exports/{JOB}/out.mp4")["Body"].read() == data
    assert keys(s3, bucket) == [f"exports/{JOB}/out.mp4"] and leftovers(s3, bucket) == []


CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from spooler.config import S3Settings
    from spooler.layout import SpoolLayout
    from spooler.s3.client import make_client
    from spooler.s3.outputs import RoutedOutputs, S3Uploads
    from spooler.status import OutputInfo
    from spooler.storage import JobFolderOutputs

    spool, job, uri, settings = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    settings = S3Settings.model_validate_json(settings)
    outputs = RoutedOutputs(
        JobFolderOutputs(SpoolLayout(Path(spool))), S3Uploads(make_client(settings), settings)
    )
    temp = SpoolLayout(Path(spool)).job_dir(job) / ".tmp-out.mp4"
    info = OutputInfo(path="out.mp4", size_bytes=temp.stat().st_size, uri=uri)
    upload_id = outputs.begin(job, temp, info)
    # The journal, durably, before the first part (what RunContext.publish writes).
    journal = {"temp": temp.name, "path": "out.mp4", "uri": uri, "uploadId": upload_id}
    Path(spool, "journal.json").write_text(json.dumps(journal))
    calls = []
    def check():
        calls.append(1)
        if len(calls) == 2:  # after the first part went up: the worker dies
            os.kill(os.getpid(), signal.SIGKILL)
    outputs.commit(job, temp, "out.mp4", check)
    """
)


@pytest.mark.parametrize("temp_survives", [True, False])
def test_kill_9_mid_upload_then_recovery(
    s3_settings: S3Settings, s3: S3Client, bucket: str, tmp_path: Path, temp_survives: bool
) -> None:
    # Given a worker killed with SIGKILL after the first of three parts
    settings = s3_settings.model_copy(update={"part_bytes": PART})
    temp = verified_temp(tmp_path, 2 * PART + 1)
    data = temp.read_bytes()
    uri = f"s3://{bucket}/exports/{JOB}/out.mp4"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), JOB, uri, settings.model_dump_json()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert leftovers(s3, bucket) == [f"exports/{JOB}/out.mp4"]  # the orphan, before recovery
    journal = json.loads((tmp_path / "journal.json").read_text())
    if not temp_survives:
        temp.unlink()
    now = datetime.now(UTC)
    status = JobStatus(
        job_id=JOB, state=State.RUNNING, submitted_at=now, updated_at=now,
        outputs=[OutputInfo(path="out.mp4", size_bytes=len(data), uri=uri)],
        planned_outputs=["out.mp4"], pending_publish=PendingPublish.model_validate(journal),
    )  # fmt: skip
    # When recovery rolls the journalled publish forward
    rolled = store(settings, tmp_path).roll_forward(JOB, status)
    # Then the upload is completed from the verified file, or aborted without it; never left
    assert leftovers(s3, bucket) == []
    if temp_survives:
        assert rolled.published
        assert s3.get_object(Bucket=bucket, Key=f"exports/{JOB}/out.mp4")["Body"].read() == data
        # and the entry gains the etag and the checksum the server reported for it, which is
        # the one of the local file
        assert rolled.outputs is not None
        (entry,) = rolled.outputs
        head = s3.head_object(Bucket=bucket, Key=f"exports/{JOB}/out.mp4", ChecksumMode="ENABLED")
        assert entry.etag == head["ETag"] and entry.uri == uri
        assert entry.checksum == composite_sha256(part_digests(data, PART))
        assert same_checksum(entry.checksum, head["ChecksumSHA256"])
    else:
        assert not rolled.published and keys(s3, bucket) == []


def test_recovery_reads_back_what_a_finished_upload_lacks(
    s3_settings: S3Settings, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    # Given an output whose upload completed just before the worker died: the status on
    # disk still journals the upload and lists the entry without its etag and checksum
    settings = s3_settings.model_copy(update={"part_bytes": PART})
    outputs = store(settings, tmp_path)
    temp = verified_temp(tmp_path, PART + 7)
    data, info = temp.read_bytes(), info_for(bucket, temp)
    upload_id = outputs.begin(JOB, temp, info)
    outputs.commit(JOB, temp, "out.mp4")
    pending = PendingPublish(temp=temp.name, path="out.mp4", uri=info.uri, upload_id=upload_id)
    status = running_status(info, pending)
    # When recovery rolls it forward
    rolled = store(settings, tmp_path).roll_forward(JOB, status)
    # Then it is published, and the entry gains the etag and checksum read back
    assert rolled.published and rolled.outputs is not None
    (entry,) = rolled.outputs
    head = s3.head_object(Bucket=bucket, Key=info.uri.split("/", 3)[3])  # type: ignore[union-attr]
    assert entry.etag == head["ETag"]
    assert entry.checksum is not None
    assert same_checksum(entry.checksum, composite_sha256(part_digests(data, PART)))
    # and an object replaced since (another size) is not taken for the output
    s3.put_object(Bucket=bucket, Key=f"exports/{JOB}/out.mp4", Body=b"other")
    assert not store(settings, tmp_path).roll_forward(JOB, status).published


def test_recovery_aborts_the_upload_of_a_job_that_must_run_again(
    s3_settings: S3Settings, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    # Given a journalled upload whose temporary file survived, but a second planned output
    # never made: the job will run again, so finishing this upload would be wasted
    settings = s3_settings.model_copy(update={"part_bytes": PART})
    outputs = store(settings, tmp_path)
    temp = verified_temp(tmp_path, PART)
    info = info_for(bucket, temp)
    upload_id = outputs.begin(JOB, temp, info)
    pending = PendingPublish(temp=temp.name, path="out.mp4", uri=info.uri, upload_id=upload_id)
    status = running_status(info, pending, also_planned=["poster.jpg"])
    # When recovery rolls it forward
    rolled = store(settings, tmp_path).roll_forward(JOB, status)
    # Then the upload is aborted, nothing is published
    assert not rolled.published
    assert leftovers(s3, bucket) == [] and keys(s3, bucket) == []


def running_status(
    info: OutputInfo, pending: PendingPublish, also_planned: list[str] | None = None
) -> JobStatus:
    now = datetime.now(UTC)
    return JobStatus(
        job_id=JOB, state=State.RUNNING, submitted_at=now, updated_at=now, outputs=[info],
        planned_outputs=[info.path, *(also_planned or [])], pending_publish=pending,
    )  # fmt: skip
