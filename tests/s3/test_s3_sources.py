"""Remote sources through the loopback gateway, against a real S3 server (moto) on loopback.

ffmpeg and PyAV are given only http://127.0.0.1:<port>/<token> and the protocol list
http,tcp; the gateway signs each range request, pins the ETag and counts the bytes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import av
import pytest
from s3_support import CuttingProxy, answering

from spooler.config import S3Settings
from spooler.errors import ErrorCode, JobError
from spooler.mediainfo import REMOTE_PROTOCOLS
from spooler.s3.client import make_client
from spooler.s3.gateway import GatewaySource, SourceGateway
from spooler.s3.locations import S3Object, parse_url
from spooler.s3.upstream import S3Upstream, UrlUpstream

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FORMATS = "mov,mp4,m4a,3gp,3g2,mj2"


@pytest.fixture
def gateway() -> Iterator[SourceGateway]:
    gw = SourceGateway(chunk_bytes=64 * 1024)
    yield gw
    gw.shutdown()


def upload(s3: S3Client, bucket: str, path: Path, key: str) -> S3Object:
    s3.upload_file(str(path), bucket, key)
    return S3Object(bucket, key)


def run_ffmpeg(ffmpeg: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-y", "-protocol_whitelist", REMOTE_PROTOCOLS,
           "-format_whitelist", FORMATS, *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


def test_reencode_and_probe_from_s3(
    s3: S3Client, s3_settings: S3Settings, bucket: str, clip: Path, ffmpeg: str,
    gateway: SourceGateway, tmp_path: Path,
) -> None:  # fmt: skip
    # Given an object in an allowed bucket, opened through the gateway
    obj = upload(s3, bucket, clip, "in/clip.mp4")
    source = gateway.open(S3Upstream(s3, obj, s3_settings.attempts))
    assert source.size == clip.stat().st_size
    # When PyAV probes it and ffmpeg re-encodes it
    options = {"protocol_whitelist": REMOTE_PROTOCOLS, "format_whitelist": FORMATS}
    with av.open(source.url, options=options) as container:
        assert container.streams.video[0].codec_context.width == 320
    out = tmp_path / "out.mp4"
    done = run_ffmpeg(ffmpeg, ["-i", source.url, "-c:v", "libx264", "-preset", "ultrafast",
                               "-c:a", "aac", str(out)])  # fmt: skip
    # Then the output is whole, and the reader only ever saw the loopback token
    assert done.returncode == 0, done.stderr
    assert duration(out) == pytest.approx(4.0, abs=0.1)
    assert source.url.startswith("http://127.0.0.1:") and bucket not in source.url
    assert gateway.fetched(source) >= source.size


def test_copy_of_a_range_fetches_a_fraction(
    s3: S3Client, s3_settings: S3Settings, bucket: str, long_clip: Path, ffmpeg: str,
    gateway: SourceGateway, tmp_path: Path,
) -> None:  # fmt: skip
    # Given a 60 s object
    obj = upload(s3, bucket, long_clip, "long.mp4")
    source = gateway.open(S3Upstream(s3, obj, s3_settings.attempts))
    # When 5 s from its middle are stream-copied
    out = tmp_path / "range.mp4"
    done = run_ffmpeg(ffmpeg, ["-ss", "30", "-i", source.url, "-t", "5", "-c", "copy", str(out)])
    assert done.returncode == 0, done.stderr
    # Then the output has the range and only a fraction of the object was fetched
    assert duration(out) == pytest.approx(5.0, abs=1.1)
    ratio = gateway.fetched(source) / source.size
    print(f"range copy fetched {gateway.fetched(source)} of {source.size} bytes ({ratio:.3f})")
    assert ratio < 0.35


def test_missing_object_is_source_missing(
    s3: S3Client, s3_settings: S3Settings, bucket: str, gateway: SourceGateway
) -> None:
    with pytest.raises(JobError) as caught:
        gateway.open(S3Upstream(s3, S3Object(bucket, "nope.mp4"), 1))
    assert caught.value.code == ErrorCode.SOURCE_MISSING


def test_object_replaced_mid_job_fails_with_source_changed(
    s3: S3Client, s3_settings: S3Settings, bucket: str, clip: Path, long_clip: Path,
    gateway: SourceGateway, ffmpeg: str, tmp_path: Path,
) -> None:  # fmt: skip
    # Given a source pinned at open, then replaced by another object under the same key
    obj = upload(s3, bucket, clip, "clip.mp4")
    source = gateway.open(S3Upstream(s3, obj, s3_settings.attempts))
    upload(s3, bucket, long_clip, "clip.mp4")
    # When ffmpeg reads it, then the read fails and the gateway names the cause
    done = run_ffmpeg(ffmpeg, ["-i", source.url, "-c", "copy", str(tmp_path / "x.mp4")])
    assert done.returncode != 0
    error = gateway.error(source)
    assert error is not None and error.code == ErrorCode.SOURCE_CHANGED and error.transient


def test_connection_cut_mid_read_is_retried(
    s3_endpoint: str, bucket: str, clip: Path, ffmpeg: str, gateway: SourceGateway,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Given the S3 server behind a proxy that cuts the first two responses mid-body
    port = int(s3_endpoint.rsplit(":", 1)[1])
    setup = make_client(S3Settings(endpoint_url=s3_endpoint))
    obj = upload(setup, bucket, clip, "cut.mp4")
    proxy = CuttingProxy(port, cuts=2, after_bytes=20_000)
    try:
        settings = S3Settings(endpoint_url=f"http://127.0.0.1:{proxy.port}", attempts=4)
        client = make_client(settings)
        source = gateway.open(S3Upstream(client, obj, settings.attempts))
        # When ffmpeg copies it through the gateway
        out = tmp_path / "out.mp4"
        done = run_ffmpeg(ffmpeg, ["-i", source.url, "-c", "copy", str(out)])
    finally:
        proxy.close()
    # Then the cuts happened, were retried, and the output is whole
    assert proxy.cut == 2
    assert done.returncode == 0, done.stderr
    assert gateway.error(source) is None
    assert duration(out) == pytest.approx(4.0, abs=0.1)


def test_presigned_url_source(
    s3: S3Client, bucket: str, clip: Path, ffmpeg: str, gateway: SourceGateway,
    tmp_path: Path, s3_endpoint: str,
) -> None:  # fmt: skip
    # Given a presigned GET URL on a host the operator allows over http (local server)
    obj = upload(s3, bucket, clip, "signed.mp4")
    url = s3.generate_presigned_url("get_object", {"Bucket": bucket, "Key": obj.key}, 300)
    settings = S3Settings(allowed_url_hosts=["127.0.0.1"], http_hosts=["127.0.0.1"])
    source = gateway.open(UrlUpstream(parse_url(url, settings), 2, 5))
    # When ffmpeg copies it
    out = tmp_path / "out.mp4"
    done = run_ffmpeg(ffmpeg, ["-i", source.url, "-c", "copy", str(out)])
    # Then it works and the signature appears nowhere the gateway shows
    assert done.returncode == 0, done.stderr
    assert "X-Amz-Signature" in url
    assert "Signature" not in source.shown and "?" not in source.shown
    assert "Signature" not in source.url and "Credential" not in done.stderr


def _open_url(gateway: SourceGateway, url: str) -> GatewaySource:
    settings = S3Settings(allowed_url_hosts=["127.0.0.1"], http_hosts=["127.0.0.1"])
    return gateway.open(UrlUpstream(parse_url(url, settings), 1, 5))


def test_redirect_to_another_host_is_refused(gateway: SourceGateway) -> None:
    where = {"Location": "http://169.254.169.254/latest/meta-data/"}
    with answering(302, where) as port, pytest.raises(JobError) as caught:
        _open_url(gateway, f"http://127.0.0.1:{port}/a.mp4?X-Amz-Signature=secret")
    assert caught.value.code == ErrorCode.SOURCE_NOT_ALLOWED
    assert "secret" not in str(caught.value) and "secret" not in repr(caught.value.details)


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, ErrorCode.SOURCE_FORBIDDEN), (404, ErrorCode.SOURCE_MISSING),
     (503, ErrorCode.STORAGE_FAILED)],
)  # fmt: skip
def test_refusals_map_to_error_codes(gateway: SourceGateway, status: int, code: str) -> None:
    # An expired or tampered presigned URL is S3's 403 (AccessDenied / SignatureDoesNotMatch)
    with answering(status, {}) as port, pytest.raises(JobError) as caught:
        _open_url(gateway, f"http://127.0.0.1:{port}/a.mp4?X-Amz-Expires=1&X-Amz-Signature=s")
    assert caught.value.code == code
    assert "X-Amz" not in caught.value.message


def test_unknown_token_is_404(gateway: SourceGateway, ffmpeg: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{gateway.port}/not-a-token"
    done = run_ffmpeg(ffmpeg, ["-i", url, "-c", "copy", str(tmp_path / "x.mp4")])
    assert done.returncode != 0 and "404" in done.stderr
