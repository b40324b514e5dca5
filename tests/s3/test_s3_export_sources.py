"""Export jobs whose sources are remote (s3:// objects, presigned URLs), through a real
daemon: moto_server on loopback for S3, s3rver where a presigned URL must be checked, small
loopback servers for what neither can show (a redirect, a URL that expires mid-read).

Each remote export is compared with the same job from local files; the presigned URL's
signature must appear nowhere the daemon writes (job folder, its log, ffmpeg's argv)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import av
import pytest
from conftest import make_mp4
from s3_support import CuttingProxy, answering
from support import Spool
from test_s3_signatures import presign, s3rver, signer  # noqa: F401 (fixtures)

from spooler.s3.gateway import SourceGateway
from spooler.s3.locations import S3Object
from spooler.s3.upstream import S3Upstream

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 4
FAST = {"preset": "ultrafast"}


@pytest.fixture(scope="module")
def cams(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cams")
    return {
        name: make_mp4(ffmpeg, folder / f"{name}.mp4", SECONDS, size="160x120")
        for name in ("cam1", "cam2")
    }


@pytest.fixture(scope="module")
def long_cam(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mp4(ffmpeg, tmp_path_factory.mktemp("long") / "long.mp4", 120, size="160x120")


def export_job(cam1: str, cam2: str, mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "export",
        "angles": [{"id": "a", "source": cam1}, {"id": "b", "source": cam2}],
        "switches": [{"at": 0.0, "angle": "a"}, {"at": 2.2, "angle": "b"}],  # off a keyframe
        "end": 3.5,
        "output": {"container": "mp4", "videoCodec": "h264", "fileName": "out.mp4", **FAST},
        "mode": mode,
        **extra,
    }


def s3_env(endpoint: str, bucket: str, **more: Any) -> dict[str, str]:
    env = {"s3__endpoint_url": endpoint, "s3__allowed_buckets": json.dumps([bucket])}
    return {**env, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in more.items()}}


def upload(s3: S3Client, bucket: str, files: dict[str, Path]) -> tuple[str, ...]:
    """Put each file in the bucket as <name>.mp4; their s3:// names, in order."""
    for name, path in files.items():
        s3.upload_file(str(path), bucket, f"{name}.mp4")
    return tuple(f"s3://{bucket}/{name}.mp4" for name in files)


def local(spool: Spool, files: dict[str, Path]) -> None:
    for name, path in files.items():
        (spool.media / f"{name}.mp4").write_bytes(path.read_bytes())


def video_packets(path: Path) -> list[tuple[int | None, int | None, bytes]]:
    with av.open(str(path)) as container:
        return [
            (p.pts, p.dts, bytes(p))
            for p in container.demux(video=0)
            if p.size  # the demuxer's final empty packet
        ]


def succeeded(spool: Spool, job_id: str, timeout: float = 120) -> dict[str, Any]:
    status = spool.wait_final(job_id, timeout=timeout)
    assert status["state"] == "succeeded", status.get("error")
    return status


def failed(spool: Spool, job_id: str, code: str) -> dict[str, Any]:
    status = spool.wait_final(job_id, timeout=60)
    assert status["state"] == "failed", status
    assert status["error"]["code"] == code, status["error"]
    assert (spool.layout.job_dir(job_id) / "job.json").exists()  # the job file is kept
    return status


def ffmpeg_lines(spool: Spool, job_id: str) -> list[str]:
    log = (spool.layout.job_dir(job_id) / "job.log").read_text()
    return [line for line in log.splitlines() if "-protocol_whitelist" in line]


def test_reencode_copy_and_smart_from_s3_match_the_local_exports(
    spool: Spool,
    make_daemon: Any,
    s3: S3Client,
    s3_endpoint: str,
    bucket: str,
    cams: dict[str, Path],
) -> None:
    # Given the same two clips in the bucket and in the media root
    remote = upload(s3, bucket, cams)
    local(spool, cams)
    make_daemon(**s3_env(s3_endpoint, bucket))
    # When each mode runs once from S3 and once from the local files
    for mode in ("reencode", "copy", "smart"):
        spool.submit(f"{mode}-s3", export_job(*remote, mode))
        spool.submit(f"{mode}-local", export_job("cam1.mp4", "cam2.mp4", mode))
    for mode in ("reencode", "copy", "smart"):
        from_s3, from_disk = succeeded(spool, f"{mode}-s3"), succeeded(spool, f"{mode}-local")
        # Then the outputs agree: same frames and duration (copy: the very same packets)
        assert from_s3["preflight"]["mode"] == from_disk["preflight"]["mode"] == mode
        a = spool.layout.job_dir(f"{mode}-s3") / "out.mp4"
        b = spool.layout.job_dir(f"{mode}-local") / "out.mp4"
        pa, pb = video_packets(a), video_packets(b)
        assert len(pa) == len(pb) and len(pa) > 0
        (oa,), (ob,) = from_s3["outputs"], from_disk["outputs"]
        assert oa["durationSeconds"] == pytest.approx(ob["durationSeconds"], abs=1e-3)
        if mode == "copy":
            assert pa == pb
        # ffmpeg and PyAV read the objects through the loopback gateway, http,tcp only:
        # the ffconcat entries (each with its own whitelist) and the remux name its URL
        log = (spool.layout.job_dir(f"{mode}-s3") / "job.log").read_text()
        assert "http://127.0.0.1:" in log and bucket not in log
        if mode != "copy":  # smart encodes around the cut with ffmpeg too
            assert "http,tcp" in log
        if mode == "reencode":
            assert "file 'http://127.0.0.1:" in log
            assert "option protocol_whitelist http,tcp" in log
        assert all(bucket not in line for line in ffmpeg_lines(spool, f"{mode}-s3"))
        # and the preflight says how each source is read, and what was fetched
        entries = from_s3["preflight"]["remoteSources"]
        assert sorted(e["source"] for e in entries) == sorted(remote)
        assert all(e["bytesFetched"] > 0 for e in entries), entries
        assert all("staged" in e["read"] for e in entries)
    assert spool.temp_leftovers() == []


def test_a_range_export_fetches_a_small_part_of_the_object(
    spool: Spool, make_daemon: Any, s3: S3Client, s3_endpoint: str, bucket: str, long_cam: Path
) -> None:
    # Given a 2-minute object (small chunks: each reader's read-ahead is about a chunk
    # plus the socket buffers, a fixed cost per open that a small object makes look big)
    s3.upload_file(str(long_cam), bucket, "long.mp4")
    make_daemon(**s3_env(s3_endpoint, bucket, s3__chunk_bytes="16384"))
    name = f"s3://{bucket}/long.mp4"
    job = {
        "kind": "export",
        "angles": [{"id": "a", "source": name}],
        "switches": [{"at": 0.0, "angle": "a"}],
        "end": 120.0,
        "output": {"container": "mp4", "videoCodec": "h264", "fileName": "out.mp4"},
        "mode": "copy",
    }
    # When 3 s of it are exported by copy
    spool.submit("range", {**job, "range": {"start": 60.0, "end": 63.0}})
    status = succeeded(spool, "range")
    # Then the range fetched a small part of the object (the index from the moov and a
    # 2 KiB prefix per keyframe, the audio's last 10 s, the 3 s, each reader's read-ahead)
    (entry,) = status["preflight"]["remoteSources"]
    assert entry["sizeBytes"] == long_cam.stat().st_size
    ratio = entry["bytesFetched"] / entry["sizeBytes"]
    print(f"range export fetched {entry['bytesFetched']} of {entry['sizeBytes']} ({ratio:.3f})")
    assert 0 < ratio < 0.35, f"fetched {entry['bytesFetched']} of {entry['sizeBytes']} bytes"
    assert 2.9 < status["outputs"][0]["durationSeconds"] < 3.1


@pytest.fixture(scope="module")
def logo(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logo") / "logo.png"
    subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=red:size=32x16",
         "-frames:v", "1", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_presigned_urls_leave_no_signature_anywhere(
    spool: Spool,
    make_daemon: Any,
    s3: S3Client,
    bucket: str,
    cams: dict[str, Path],
    logo: Path,
) -> None:
    # Given presigned URLs to two angles, an external audio file and a watermark image
    # (moto does not check them; s3rver does, below)
    upload(s3, bucket, cams)
    s3.upload_file(str(logo), bucket, "logo.png")
    keys = {"cam1": "cam1.mp4", "cam2": "cam2.mp4", "logo": "logo.png"}
    urls = {
        name: s3.generate_presigned_url("get_object", {"Bucket": bucket, "Key": key}, 600)
        for name, key in keys.items()
    }
    signatures = [url.split("X-Amz-Signature=")[1].split("&")[0] for url in urls.values()]
    daemon = make_daemon(
        s3__allowed_url_hosts=json.dumps(["127.0.0.1"]),
        s3__http_hosts=json.dumps(["127.0.0.1"]),
    )
    # When a job reads all of them by URL
    job = export_job(
        urls["cam1"],
        urls["cam2"],
        "reencode",
        audio={"mode": "external", "source": urls["cam2"], "offset": 0.0},
        watermark={"image": urls["logo"], "position": "top-left", "scale": 0.2},
    )
    spool.submit("signed", job)
    status = succeeded(spool, "signed")
    # Then the status, preflight and log name them without their query
    shown = {e["source"] for e in status["preflight"]["remoteSources"]}
    assert shown == {urlsplit(u)._replace(query="").geturl() for u in urls.values()}
    # and no file the daemon wrote, nor its log, nor ffmpeg's argv holds a signature
    folder = spool.layout.job_dir("signed")
    for path in [*folder.iterdir(), daemon.log_path]:
        if path.is_file() and path.name != "job.json":  # job.json: the client's own file
            text = path.read_bytes()
            for signature in signatures:
                assert signature.encode() not in text, path
            assert b"X-Amz-Signature" not in text and b"X-Amz-Credential" not in text, path
    lines = ffmpeg_lines(spool, "signed")
    assert lines and all("X-Amz" not in line and bucket not in line for line in lines)
    assert any("-f png_pipe -protocol_whitelist http,tcp" in line for line in lines), lines


def test_refusals_outside_the_allow_lists_and_redirects(
    spool: Spool, make_daemon: Any, s3: S3Client, s3_endpoint: str, bucket: str
) -> None:
    make_daemon(
        **s3_env(s3_endpoint, bucket, s3__allowed_url_hosts=["127.0.0.1"]),
        s3__http_hosts=json.dumps(["127.0.0.1"]),
    )
    # A bucket outside the allow-list, a host outside it: refused before any read
    spool.submit("bucket", export_job("s3://other-bucket/a.mp4", "s3://other-bucket/a.mp4", "copy"))
    status = failed(spool, "bucket", "source_not_allowed")
    assert "s3.allowed_buckets" in status["error"]["message"] and status["attempt"] == 1
    url = "https://elsewhere.example/a.mp4?X-Amz-Signature=deadbeef"
    spool.submit("host", export_job(url, url, "copy"))
    status = failed(spool, "host", "source_not_allowed")
    assert "deadbeef" not in json.dumps(status)
    # A redirect to another host: never followed
    with answering(302, {"Location": "http://elsewhere.example/a.mp4"}) as port:
        spool.submit("redirect", export_job(*[f"http://127.0.0.1:{port}/a.mp4?sig=x"] * 2, "copy"))
        status = failed(spool, "redirect", "source_not_allowed")
    assert "sig=x" not in json.dumps(status)


def test_remote_sources_are_refused_by_default_and_boto3_stays_unloaded(
    spool: Spool, make_daemon: Any
) -> None:
    # Given a daemon with the shipped settings (empty allow-lists)
    make_daemon()
    spool.submit("off", export_job("s3://media/a.mp4", "s3://media/b.mp4", "reencode"))
    status = failed(spool, "off", "source_not_allowed")
    # Then the message says how an operator allows them
    assert "s3.allowed_buckets" in status["error"]["message"]
    assert "s3.allowed_url_hosts" in status["error"]["message"]
    # and refusing them loads no boto3 (checked in a fresh interpreter)
    code = (
        "import sys\n"
        "from spooler.config import S3Settings\n"
        "from spooler.daemon import Daemon\n"
        "from spooler.export.kind import ExportKind\n"
        "from spooler.s3.remotes import JobRemotes, RemoteSources\n"
        "from spooler.errors import JobError\n"
        "try:\n"
        "    JobRemotes(RemoteSources(), S3Settings()).open('s3://media/a.mp4')\n"
        "except JobError as exc:\n"
        "    assert exc.code.value == 'source_not_allowed'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out


@contextmanager
def expiring_server(path: Path, good_requests: int | None = None) -> Iterator[ExpiringUrl]:
    """Serves `path` by range (with an ETag) until it expires, then answers 403 to every
    request: a presigned URL that expires while the job reads it. It expires after
    `good_requests` requests, or when the test calls `expire()`."""
    data = path.read_bytes()
    served = [0]
    lock = threading.Lock()
    expired = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                served[0] += 1
                if good_requests is not None and served[0] > good_requests:
                    expired.set()
            if expired.is_set():
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last), len(data) - 1)
            self.send_response(206)
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            self.wfile.write(data[start : end + 1])

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ExpiringUrl(int(server.server_address[1]), expired)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class ExpiringUrl:
    port: int
    expired: threading.Event

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}?X-Amz-Signature=feedface"


def test_forbidden_urls_fail_as_source_forbidden(
    spool: Spool,
    make_daemon: Any,
    signer: object,  # noqa: F811 (the fixture imported above)
    s3rver: str,  # noqa: F811
    cams: dict[str, Path],
) -> None:
    host = {
        "s3__allowed_url_hosts": json.dumps(["127.0.0.1"]),
        "s3__http_hosts": json.dumps(["127.0.0.1"]),
    }
    made = time.monotonic()
    expired = presign(signer, 1)  # expired by the time its job runs (below)
    make_daemon(s3__chunk_bytes=16384, **host)
    # A tampered presigned URL (s3rver checks its credential and expiry): refused when opened
    url = presign(signer, 300)
    tampered = url.replace("X-Amz-Credential=S3RVER", "X-Amz-Credential=AKIAFORGED")
    assert tampered != url
    spool.submit("tampered", export_job(tampered, tampered, "reencode"))
    status = failed(spool, "tampered", "source_forbidden")
    assert "AKIAFORGED" not in json.dumps(status) and status["attempt"] == 1
    # An expired one: the same
    time.sleep(max(0.0, made + 2.2 - time.monotonic()))
    spool.submit("expired", export_job(expired, expired, "reencode"))
    status = failed(spool, "expired", "source_forbidden")
    assert "X-Amz" not in json.dumps(status)
    # A URL that expires while the job reads it: the job's error is the storage's 403,
    # not ffmpeg_failed (the gateway recorded it)
    with expiring_server(cams["cam1"], good_requests=4) as server:
        name = server.url("cam1.mp4")
        spool.submit("expiring", export_job(name, name, "reencode"))
        status = failed(spool, "expiring", "source_forbidden")
    assert "feedface" not in json.dumps(status) and status["attempt"] == 1
    log = (spool.layout.job_dir("expiring") / "job.log").read_text()
    assert "explained by a remote source" in log and "feedface" not in log


def test_a_url_expiring_while_ffmpeg_reads_fails_as_source_forbidden(
    spool: Spool, make_daemon: Any, long_cam: Path
) -> None:
    # Given a URL that expires once the job has been planned (its preflight is written)
    make_daemon(
        s3__allowed_url_hosts=json.dumps(["127.0.0.1"]),
        s3__http_hosts=json.dumps(["127.0.0.1"]),
        s3__chunk_bytes="16384",
        s3__attempts="1",
    )
    with expiring_server(long_cam) as server:
        name = server.url("long.mp4")
        job = {**export_job(name, name, "reencode"), "end": 120.0}
        spool.submit("mid-job", job)
        spool.wait_for("mid-job", lambda s: bool(s.get("preflight")), timeout=60)
        server.expired.set()
        # When ffmpeg reads on, then the job fails once with the storage's 403 (not
        # ffmpeg_failed), and job.log says which failure it explains
        status = failed(spool, "mid-job", "source_forbidden")
    assert status["attempt"] == 1 and "feedface" not in json.dumps(status)
    log = (spool.layout.job_dir("mid-job") / "job.log").read_text()
    assert "explained by a remote source" in log and "feedface" not in log


def test_a_connection_cut_mid_read_is_retried(
    spool: Spool,
    make_daemon: Any,
    s3: S3Client,
    s3_endpoint: str,
    bucket: str,
    cams: dict[str, Path],
) -> None:
    # Given a proxy in front of the S3 server that cuts the first two long downloads
    remote = upload(s3, bucket, cams)
    proxy = CuttingProxy(int(urlsplit(s3_endpoint).port or 0), cuts=2, after_bytes=20_000)
    try:
        make_daemon(**s3_env(f"http://127.0.0.1:{proxy.port}", bucket, s3__chunk_bytes=65536))
        # When a job reads through it
        spool.submit("cut", export_job(*remote, "reencode"))
        # Then the cut reads were retried and the job succeeded
        succeeded(spool, "cut")
        assert proxy.cut >= 1
    finally:
        proxy.close()


def test_refused_remote_names_in_the_model_never_echo_the_url() -> None:
    from spooler.export.rules import check_source_name

    for bad in ("https://u:p@h/x?sig=1", "s3://A/x", "https://h/x#frag", "https://h"):
        problem = check_source_name(bad)
        assert problem is not None and "sig=1" not in problem and "u:p" not in problem
    assert check_source_name("https://h/day 1/cam.mp4") is not None  # URLs encode spaces
    assert check_source_name("s3://media/day 1/cam.mp4") is None  # keys may hold them
    assert check_source_name("https://cdn.example/v/cam.mp4?X-Amz-Signature=1") is None


def test_readers_of_the_same_bytes_share_one_fetch(
    s3: S3Client, bucket: str, cams: dict[str, Path]
) -> None:
    # Given a source opened in a gateway with small chunks
    s3.upload_file(str(cams["cam1"]), bucket, "c.mp4")
    gateway = SourceGateway(chunk_bytes=16384)
    try:
        source = gateway.open(S3Upstream(s3, S3Object(bucket, "c.mp4"), 2))

        def read_all() -> bytes:
            with urllib.request.urlopen(source.url, timeout=30) as response:
                data: bytes = response.read()
            return data

        # When two readers walk it side by side (an angle's video and its audio), then a third
        with ThreadPoolExecutor(2) as pool:
            bodies = list(pool.map(lambda _: read_all(), range(2)))
        bodies.append(read_all())
        # Then each got the object, and each byte was fetched from the storage once
        assert all(body == cams["cam1"].read_bytes() for body in bodies)
        assert gateway.fetched(source) == source.size
        # and closing the source empties its cached chunks
        gateway.close(source)
        assert gateway.cache.get((source.token, 0)) is None
    finally:
        gateway.shutdown()


@pytest.mark.parametrize("key", ["../secret/x.mp4", "a/./b.mp4", "a/.."])
def test_keys_with_dot_components_are_refused(key: str) -> None:
    # An allowed bucket, but a key a normalising proxy or server would read elsewhere
    from spooler.config import S3Settings
    from spooler.errors import JobError
    from spooler.s3.locations import parse_s3

    with pytest.raises(JobError) as caught:
        parse_s3(f"s3://shoots/{key}", S3Settings(allowed_buckets=["shoots"]))
    assert caught.value.code.value == "source_not_allowed"
    assert parse_s3("s3://shoots/a..b/c.mp4", S3Settings(allowed_buckets=["shoots"])).key
