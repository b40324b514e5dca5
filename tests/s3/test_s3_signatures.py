"""Presigned URLs against a server that checks them (s3rver, from npm, installed by .ci/run
into tests/s3/s3rver): a tampered or expired URL is one clear source_forbidden, also when it
expires mid-job; the web helper's URLs are accepted, and refused once expired.

s3rver checks a V4 URL's expiry and its access key, not the V4 signature itself (its
source says so): the tampering tested here is of the credential. The signature's own
computation is checked against AWS's published example (web/test/s3.test.ts)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from support import free_port, wait_listening

from spooler.config import S3Settings
from spooler.errors import ErrorCode, JobError
from spooler.mediainfo import REMOTE_PROTOCOLS
from spooler.s3.gateway import SourceGateway
from spooler.s3.locations import parse_url
from spooler.s3.upstream import UrlUpstream

HERE = Path(__file__).resolve().parent
S3RVER = HERE / "s3rver" / "node_modules" / ".bin" / "s3rver"
WEB = HERE.parent.parent / "web"
BUCKET = "signed"
KEY = "S3RVER"  # s3rver's built-in access key and secret
ALLOW = S3Settings(allowed_url_hosts=["127.0.0.1"], http_hosts=["127.0.0.1"])


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not S3RVER.exists():
        pytest.fail("s3rver is missing: (cd tests/s3/s3rver && npm ci), as .ci/run does")
    port = free_port()
    proc = subprocess.Popen(
        [str(S3RVER), "-d", str(tmp_path_factory.mktemp("s3rver")), "-a", "127.0.0.1",
         "-p", str(port), "--silent", "--configure-bucket", BUCKET],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    wait_listening(port, proc, "s3rver")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def signer(s3rver: str, clip: Path) -> object:
    client = boto3.session.Session(aws_access_key_id=KEY, aws_secret_access_key=KEY).client(
        "s3", endpoint_url=s3rver, region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )  # fmt: skip
    client.upload_file(str(clip), BUCKET, "clip.mp4")
    return client


def presign(signer: object, seconds: int) -> str:
    url: str = signer.generate_presigned_url(  # type: ignore[attr-defined]
        "get_object", {"Bucket": BUCKET, "Key": "clip.mp4"}, ExpiresIn=seconds
    )
    return url


@pytest.fixture
def gateway() -> Iterator[SourceGateway]:
    gw = SourceGateway(chunk_bytes=64 * 1024)
    yield gw
    gw.shutdown()


def test_valid_url_reads_through_the_gateway(
    signer: object, gateway: SourceGateway, ffmpeg: str, tmp_path: Path, clip: Path
) -> None:
    source = gateway.open(UrlUpstream(parse_url(presign(signer, 300), ALLOW), 2, 5))
    assert source.size == clip.stat().st_size
    out = tmp_path / "out.mp4"
    done = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-protocol_whitelist", REMOTE_PROTOCOLS,
         "-format_whitelist", "mov,mp4,m4a,3gp,3g2,mj2", "-i", source.url, "-c", "copy",
         str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0


def test_tampered_url_is_source_forbidden(signer: object, gateway: SourceGateway) -> None:
    url = presign(signer, 300)
    tampered = url.replace(f"X-Amz-Credential={KEY}", "X-Amz-Credential=AKIAFORGED")
    assert tampered != url
    with pytest.raises(JobError) as caught:
        gateway.open(UrlUpstream(parse_url(tampered, ALLOW), 2, 5))
    assert caught.value.code == ErrorCode.SOURCE_FORBIDDEN and not caught.value.transient
    assert "Signature" not in caught.value.message


def test_url_expiring_mid_job_fails_once_as_forbidden(
    signer: object, gateway: SourceGateway, ffmpeg: str, tmp_path: Path
) -> None:
    # Given a URL valid when the source is opened, expired when ffmpeg reads it
    source = gateway.open(UrlUpstream(parse_url(presign(signer, 1), ALLOW), 2, 5))
    time.sleep(2.2)
    # When ffmpeg reads, then the read fails at once (no reconnect loop) as source_forbidden
    begin = time.monotonic()
    done = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-protocol_whitelist", REMOTE_PROTOCOLS,
         "-i", source.url, "-c", "copy", str(tmp_path / "x.mp4")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and time.monotonic() - begin < 10
    error = gateway.error(source)
    assert error is not None and error.code == ErrorCode.SOURCE_FORBIDDEN
    assert "X-Amz" not in error.message


def test_expired_url_is_refused_when_opened(signer: object, gateway: SourceGateway) -> None:
    url = presign(signer, 1)
    time.sleep(2.2)
    with pytest.raises(JobError) as caught:
        gateway.open(UrlUpstream(parse_url(url, ALLOW), 1, 5))
    assert caught.value.code == ErrorCode.SOURCE_FORBIDDEN


def test_web_helper_urls_are_accepted(
    signer: object, s3rver: str, clip: Path, tmp_path: Path
) -> None:
    # The TypeScript presigner (web/src/s3.ts), transpiled alone (the web package's own
    # build type-checks it), against the checking server
    out = tmp_path / "web"
    (out / "dist" / "src").mkdir(parents=True)
    transpile = (
        "const ts = require('typescript'); const fs = require('fs');"
        "const src = fs.readFileSync(process.argv[1], 'utf8');"
        "const js = ts.transpileModule(src, {compilerOptions: {module: ts.ModuleKind.ESNext,"
        " target: ts.ScriptTarget.ES2022}}).outputText;"
        "fs.writeFileSync(process.argv[2], js);"
    )
    subprocess.run(
        ["node", "-e", transpile, str(WEB / "src" / "s3.ts"), str(out / "dist/src/s3.js")],
        check=True, timeout=60, cwd=WEB,
    )  # fmt: skip
    (out / "package.json").write_text('{"type": "module"}')

    def web_presign(signed_ago: int) -> str:
        script = (
            "import { presignOutputUri } from './dist/src/s3.js';"
            f"const c = {{accessKeyId: '{KEY}', secretAccessKey: '{KEY}'}};"
            f"console.log(JSON.stringify(presignOutputUri('s3://{BUCKET}/clip.mp4', "
            f"{{credentials: c, region: 'us-east-1', endpoint: '{s3rver}', expiresSeconds: 60,"
            f" now: new Date(Date.now() - {signed_ago * 1000})}})));"
        )
        made = subprocess.run(["node", "--input-type=module", "-e", script], cwd=out,
                              capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
        url: str = json.loads(made.stdout)
        return url

    with urllib.request.urlopen(web_presign(0), timeout=10) as response:
        assert response.read() == clip.read_bytes()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(web_presign(120), timeout=10)
    refused.value.close()
    assert refused.value.code == 403
