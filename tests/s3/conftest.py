"""A real S3 server on loopback (moto's server mode, a separate process) and small media.

moto keeps objects in memory and does not check signatures: the tests that need a refusal
from the server (403) or a redirect use small loopback servers of their own (s3_support).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from s3_support import CREDENTIALS
from support import free_port, wait_listening

from spooler.config import S3Settings
from spooler.ffmpeg import find_ffmpeg
from spooler.s3.client import make_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto_server on 127.0.0.1 for the whole session; the standard credential chain reads
    the test's keys from the environment (never from a job)."""
    for name, value in CREDENTIALS.items():
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_listening(port, proc, "moto_server")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    make_client(S3Settings(endpoint_url=s3_endpoint)).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_settings(s3_endpoint: str, bucket: str) -> S3Settings:
    return S3Settings(endpoint_url=s3_endpoint, allowed_buckets=[bucket], attempts=3)


@pytest.fixture
def s3(s3_settings: S3Settings) -> S3Client:
    return make_client(s3_settings)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg(None)


def make_mp4(ffmpeg: str, path: Path, seconds: float, *, size: str = "320x240") -> Path:
    """testsrc2 + a tone, H.264 with a keyframe every second, moov first (faststart)."""
    subprocess.run(
        [
            ffmpeg, "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def clip(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mp4(ffmpeg, tmp_path_factory.mktemp("media") / "clip.mp4", 4)


@pytest.fixture(scope="session")
def long_clip(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mp4(ffmpeg, tmp_path_factory.mktemp("media") / "long.mp4", 60)
