"""The boto3 S3 client, from settings; credentials come from boto3's standard chain only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from spooler.config import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def make_client(settings: S3Settings) -> S3Client:
    """A client that signs every request itself (SigV4), so refreshed credentials (STS,
    instance roles) apply to each range request of a long job. botocore retries nothing:
    every call goes through upstream.retrying, `attempts` tries in all (the two layers
    together made attempts x (attempts + 1) requests of one failing range)."""
    config = Config(
        signature_version="s3v4",
        region_name=settings.region,
        connect_timeout=settings.timeout_seconds,
        read_timeout=settings.timeout_seconds,
        retries={"mode": "standard", "max_attempts": 1},
        # Checksums only where we ask for them (multipart parts), not on every range GET.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint_url, config=config
    )
    return client
