"""Exports to S3 through a real daemon (moto_server on loopback): the outputs are uploaded
under the destination, the status lists their uri/etag/checksum, and a daemon killed with
the multipart upload open is finished by recovery (no orphan, no duplicate), off the loop
thread (heartbeats go on while it uploads), even when that daemon is killed in turn."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from s3_support import CREDENTIALS, CuttingProxy, part_digests
from support import DaemonProcess, Spool

from spooler.demo import demo_job, generate_media
from spooler.ffmpeg import find_ffmpeg
from spooler.s3.outputs import composite_sha256, same_checksum

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="module")
def shoot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shoot")
    generate_media(find_ffmpeg(None), folder / "demo")
    return folder


def _job(spool: Spool, shoot: Path, destination: str) -> dict[str, Any]:
    shutil.copytree(shoot, spool.media, dirs_exist_ok=True)
    media = {p.stem: p for p in (spool.media / "demo").iterdir()}
    job = demo_job(spool.media, media)
    job["output"] = {**job["output"], "destination": destination, "preset": "ultrafast"}
    return job


def _s3_env(s3_endpoint: str, bucket: str) -> dict[str, str]:
    return {"s3__endpoint_url": s3_endpoint, "s3__allowed_buckets": json.dumps([bucket])}


def _uploads(s3: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _keys(s3: S3Client, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _no_secret_anywhere(spool: Spool, job_id: str) -> None:
    for path in spool.layout.job_dir(job_id).iterdir():
        if path.is_file():
            text = path.read_bytes()
            assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode() not in text, path
            assert b"X-Amz-Signature" not in text and b"Signature=" not in text, path


def test_export_to_s3(
    spool: Spool, make_daemon: Any, shoot: Path, s3: S3Client, s3_endpoint: str, bucket: str
) -> None:
    # Given a daemon allowed to write the bucket, and an export naming a prefix in it
    daemon = make_daemon(**_s3_env(s3_endpoint, bucket))
    spool.submit("to-s3", _job(spool, shoot, f"s3://{bucket}/exports/"))
    # When it runs
    status = spool.wait_final("to-s3", timeout=120)
    # Then the output is one object under prefix/<job id>/, listed with uri, etag, checksum
    assert status["state"] == "succeeded", status.get("error")
    (output,) = status["outputs"]
    key = "exports/to-s3/demo-export.mp4"
    assert output["uri"] == f"s3://{bucket}/{key}" and output["path"] == "demo-export.mp4"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == output["sizeBytes"] and head["ETag"] == output["etag"]
    assert output["checksum"].endswith("-1")
    assert _keys(s3, bucket) == [key] and _uploads(s3, bucket) == []
    assert not (spool.layout.job_dir("to-s3") / "demo-export.mp4").exists()
    assert spool.temp_leftovers() == []
    _no_secret_anywhere(spool, "to-s3")
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in daemon.log_path.read_text()


def test_destination_outside_the_allow_list_is_refused(
    spool: Spool, make_daemon: Any, shoot: Path, s3: S3Client, s3_endpoint: str, bucket: str
) -> None:
    make_daemon(**_s3_env(s3_endpoint, bucket))
    spool.submit("elsewhere", _job(spool, shoot, "s3://another-bucket/exports/"))
    status = spool.wait_final("elsewhere", timeout=60)
    assert status["state"] == "failed"
    assert status["error"]["code"] == "source_not_allowed" and status["attempt"] == 1
    assert _keys(s3, bucket) == []


def test_daemon_killed_with_the_upload_open_then_recovery(
    spool: Spool, make_daemon: Any, shoot: Path, s3: S3Client, s3_endpoint: str, bucket: str
) -> None:
    # Given a daemon that dies (as kill -9 would) right after journalling the UploadId
    env = _s3_env(s3_endpoint, bucket)
    _killed_with_the_upload_open(spool, make_daemon, shoot, env, bucket, "killed")
    journal = spool.status("killed")["pendingPublish"]  # type: ignore[index]
    assert journal["uploadId"] and journal["uri"].endswith("/killed/demo-export.mp4")
    assert _uploads(s3, bucket) == ["exports/killed/demo-export.mp4"]  # open, before recovery
    # When a daemon starts again
    make_daemon(**env)
    status = spool.wait_final("killed", timeout=60)
    # Then recovery completed the journalled upload: one object, no orphan, not run again
    assert status["state"] == "succeeded", status.get("error")
    assert _uploads(s3, bucket) == [] and _keys(s3, bucket) == ["exports/killed/demo-export.mp4"]
    assert status["attempt"] == 1
    _no_secret_anywhere(spool, "killed")


def _killed_with_the_upload_open(
    spool: Spool, make_daemon: Any, shoot: Path, env: dict[str, str], bucket: str, job_id: str
) -> int:
    """A daemon dies (as kill -9 would) right after journalling the UploadId; the size of
    the verified temporary file it leaves."""
    first = make_daemon(extra_env={"SPOOLER_FAULT_EXIT_BEFORE_RENAME": "1"}, **env)
    spool.submit(job_id, _job(spool, shoot, f"s3://{bucket}/exports/"))
    assert first.proc.wait(timeout=120) == 137
    journal = spool.status(job_id)["pendingPublish"]  # type: ignore[index]
    return (spool.layout.job_dir(job_id) / journal["temp"]).stat().st_size


def _recovering_slowly(
    spool: Spool,
    make_daemon: Any,
    shoot: Path,
    s3_endpoint: str,
    bucket: str,
    job_id: str,
    seconds: float,
) -> tuple[DaemonProcess, int, CuttingProxy, str]:
    """A daemon killed with `job_id`'s upload open, then a second one whose link uploads it
    in about `seconds`, once its recovery upload has started: (that daemon, the output's
    size, the link, its worker id)."""
    env = _s3_env(s3_endpoint, bucket)
    size = _killed_with_the_upload_open(spool, make_daemon, shoot, env, bucket, job_id)
    second, proxy, worker = _slow_daemon(make_daemon, env, s3_endpoint, seconds, size)
    try:
        started = second.wait_event("remote_roll_forward_started", timeout=30)
        assert started["job_id"] == job_id
    except BaseException:
        proxy.close()
        raise
    return second, size, proxy, worker


def _slow_daemon(
    make_daemon: Any, env: dict[str, str], s3_endpoint: str, seconds: float, size: int
) -> tuple[DaemonProcess, CuttingProxy, str]:
    """A daemon whose link to the server uploads `size` bytes in about `seconds`."""
    proxy = CuttingProxy(int(urlsplit(s3_endpoint).port or 0), upload_rate=size / seconds)
    daemon = make_daemon(**{**env, "s3__endpoint_url": f"http://127.0.0.1:{proxy.port}"})
    worker = daemon.wait_event("daemon_started")["worker"]
    return daemon, proxy, worker


def _assert_published_once(
    spool: Spool, s3: S3Client, bucket: str, job_id: str, status: dict[str, Any]
) -> None:
    """Succeeded without running again; one object, no upload left, and the entry's etag
    and checksum are the stored object's."""
    key = f"exports/{job_id}/demo-export.mp4"
    assert status["state"] == "succeeded", status.get("error")
    assert status["attempt"] == 1 and status["history"][-1]["reason"] == "finished_by_recovery"
    log = (spool.layout.job_dir(job_id) / "job.log").read_text()
    assert log.count("# attempt 1 by") == 1  # ffmpeg ran once, by the first daemon
    assert _uploads(s3, bucket) == [] and _keys(s3, bucket) == [key]
    (output,) = status["outputs"]
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert head["ContentLength"] == output["sizeBytes"] == len(body)
    assert output["etag"] == head["ETag"]
    assert output["checksum"] == composite_sha256(part_digests(body, 8 << 20))
    assert same_checksum(output["checksum"], head["ChecksumSHA256"])
    assert spool.temp_leftovers() == []
    _no_secret_anywhere(spool, job_id)


def test_recovery_upload_runs_off_the_loop(
    spool: Spool, make_daemon: Any, shoot: Path, s3: S3Client, s3_endpoint: str, bucket: str
) -> None:
    # Given a daemon killed with the upload open; when a daemon starts again and finishes
    # the upload over a slow link (about 8 s)
    _, size, proxy, worker = _recovering_slowly(
        spool, make_daemon, shoot, s3_endpoint, bucket, "slow", 8.0
    )
    try:
        began, stalest = time.monotonic(), 0.0
        beat = spool.layout.heartbeat_file(worker)
        while _uploads(s3, bucket) and time.monotonic() - began < 60:
            stalest = max(stalest, time.time() - beat.stat().st_mtime)
            time.sleep(0.05)
        upload_seconds = time.monotonic() - began
        status = spool.wait_final("slow", timeout=30)
    finally:
        proxy.close()
    # Then its heartbeat (every 0.5 s, lease 3 s) stayed fresh the whole time the upload ran
    assert upload_seconds > 4 and proxy.uploaded >= size  # it really was slow, through the link
    assert stalest < 2.0, f"heartbeat {stalest:.1f} s old during the recovery upload"
    # and the job is finished, not run again, its output listed with etag and checksum
    _assert_published_once(spool, s3, bucket, "slow", status)


def test_daemon_killed_during_the_recovery_upload(
    spool: Spool, make_daemon: Any, shoot: Path, s3: S3Client, s3_endpoint: str, bucket: str
) -> None:
    # Given a daemon killed with the upload open, and a second one finishing it slowly
    second, size, proxy, _ = _recovering_slowly(
        spool, make_daemon, shoot, s3_endpoint, bucket, "twice", 10.0
    )
    try:
        deadline = time.monotonic() + 30
        while proxy.uploaded < size // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # When that one is killed with SIGKILL in the middle of the recovery upload
        assert proxy.uploaded < size  # mid-upload, not after it
        second.kill9()
    finally:
        proxy.close()
    # Then the journal still names the open upload (the status was not touched)
    assert spool.status("twice")["state"] == "running"  # type: ignore[index]
    assert _uploads(s3, bucket) == ["exports/twice/demo-export.mp4"]
    # and a third daemon finishes it: one object or none, no orphan, not run again
    make_daemon(**_s3_env(s3_endpoint, bucket))
    status = spool.wait_final("twice", timeout=60)
    _assert_published_once(spool, s3, bucket, "twice", status)


def test_recovery_upload_retried_while_the_server_is_unreachable(
    spool: Spool, make_daemon: Any, shoot: Path, s3: S3Client, s3_endpoint: str, bucket: str
) -> None:
    # Given a daemon killed with the upload open, and the server unreachable for the next
    env = _s3_env(s3_endpoint, bucket)
    size = _killed_with_the_upload_open(spool, make_daemon, shoot, env, bucket, "later")
    proxy = CuttingProxy(int(urlsplit(s3_endpoint).port or 0))
    proxy.refusing = True
    try:
        daemon = make_daemon(
            **{**env, "s3__endpoint_url": f"http://127.0.0.1:{proxy.port}", "s3__attempts": "2"}
        )
        # When its recovery fails for want of the server (after the per-request retries)
        retry = daemon.wait_event("remote_roll_forward_retry", timeout=60)
        assert retry["job_id"] == "later" and "storage_failed" in json.dumps(retry)
        # Then the job is left as it was: running, the upload journalled and open
        assert spool.status("later")["state"] == "running"  # type: ignore[index]
        assert _uploads(s3, bucket) == ["exports/later/demo-export.mp4"]
        # and once the server answers again, a later try finishes it
        proxy.refusing = False
        status = spool.wait_final("later", timeout=60)
    finally:
        proxy.close()
    _assert_published_once(spool, s3, bucket, "later", status)
    assert proxy.uploaded >= size
