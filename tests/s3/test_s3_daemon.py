"""Exports to S3 through a real daemon (moto_server on loopback): the outputs are uploaded
under the destination, the status lists their uri/etag/checksum, and a daemon killed with
the multipart upload open is finished by recovery (no orphan, no duplicate)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from s3_support import CREDENTIALS
from support import Spool

from spooler.demo import demo_job, generate_media
from spooler.ffmpeg import find_ffmpeg

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
    first = make_daemon(extra_env={"SPOOLER_FAULT_EXIT_BEFORE_RENAME": "1"}, **env)
    spool.submit("killed", _job(spool, shoot, f"s3://{bucket}/exports/"))
    assert first.proc.wait(timeout=120) == 137
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
