"""Benchmark of S3 storage against moto_server on loopback (docs/s3.md), ratios in one run:

    .venv/bin/python bench/s3_bench.py                 # 10 min source, 256 MB upload
    .venv/bin/python bench/s3_bench.py --upload-mb 1024

  range     bytes fetched for a 30 s stream copy from the middle of a 10-minute source (the
            packet index from the moov, then ffmpeg -ss/-t through the gateway) / object size
            (target <= 0.1)
  full      a full re-encode read from S3 through the gateway / the same from local disk
            (wall; target <= 1.15)
  upload    S3Uploads (multipart, SHA-256 parts, journal-ready) / boto3's own upload_file of
            the same file (wall; target <= 1.1)

moto keeps objects in memory and answers from the same machine: the network costs of real S3
are not in these figures, only the overheads of the gateway and of the upload path.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
sys.path.insert(0, str(ROOT.parent))

from spooler.config import S3Settings  # noqa: E402
from spooler.ffmpeg import find_ffmpeg  # noqa: E402
from spooler.s3.client import make_client  # noqa: E402
from spooler.s3.gateway import GATEWAY_PROTOCOLS, SourceGateway  # noqa: E402
from spooler.s3.locations import S3Object  # noqa: E402
from spooler.s3.outputs import S3Uploads  # noqa: E402
from spooler.s3.remoteindex import remote_video_index  # noqa: E402
from spooler.s3.upstream import S3Upstream  # noqa: E402

FORMATS = "mov,mp4,m4a,3gp,3g2,mj2"


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def source(ffmpeg: str, seconds: int) -> Path:
    path = CACHE / f"s3-source-{seconds}s.mp4"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
             "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(path)],
            check=True,
        )  # fmt: skip
    return path


def ffmpeg_run(ffmpeg: str, args: list[str], protocols: str) -> float:
    begin = time.perf_counter()
    subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-y", "-protocol_whitelist", protocols,
         "-format_whitelist", FORMATS, *args],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600, help="source length")
    parser.add_argument("--full-seconds", type=int, default=60, help="re-encoded length")
    parser.add_argument("--upload-mb", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    ffmpeg = find_ffmpeg(None)
    proc, endpoint = start_moto()
    gateway = SourceGateway()
    results: dict[str, float] = {}
    try:
        settings = S3Settings(endpoint_url=endpoint, allowed_buckets=["bench"])
        client = make_client(settings)
        client.create_bucket(Bucket="bench")
        work = CACHE / "s3-work"
        work.mkdir(parents=True, exist_ok=True)

        # range: index + a 30 s copy from the middle
        long = source(ffmpeg, args.seconds)
        client.upload_file(str(long), "bench", "long.mp4")
        opened = gateway.open(S3Upstream(client, S3Object("bench", "long.mp4"), 4))
        index = remote_video_index(opened.url, opened.size, {"protocol_whitelist": "http,tcp"})
        assert index is not None and index.packets
        middle = args.seconds // 2
        ffmpeg_run(ffmpeg, ["-ss", str(middle), "-i", opened.url, "-t", "30", "-c", "copy",
                            str(work / "range.mp4")], GATEWAY_PROTOCOLS)  # fmt: skip
        results["range_fetched_ratio"] = gateway.fetched(opened) / opened.size

        # full: the same re-encode from local disk and from S3
        short = source(ffmpeg, args.full_seconds)
        client.upload_file(str(short), "bench", "short.mp4")
        remote = gateway.open(S3Upstream(client, S3Object("bench", "short.mp4"), 4))
        encode = ["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"]
        local_s = ffmpeg_run(ffmpeg, ["-i", f"file:{short}", *encode, str(work / "l.mp4")], "file")
        remote_s = ffmpeg_run(ffmpeg, ["-i", remote.url, *encode, str(work / "r.mp4")],
                              GATEWAY_PROTOCOLS)  # fmt: skip
        results["full_wall_ratio"] = remote_s / local_s

        # upload: ours / boto3's upload_file
        big = work / "upload.bin"
        with big.open("wb") as out:
            for _ in range(args.upload_mb):
                out.write(os.urandom(1024 * 1024))
        begin = time.perf_counter()
        client.upload_file(str(big), "bench", "boto3.bin")
        boto_s = time.perf_counter() - begin
        uploads = S3Uploads(client, settings)
        obj = S3Object("bench", "ours.bin")
        begin = time.perf_counter()
        uploads.upload(obj, uploads.begin(obj), big)
        ours_s = time.perf_counter() - begin
        results["upload_wall_ratio"] = ours_s / boto_s
        results.update(upload_seconds=ours_s, boto3_upload_file_seconds=boto_s)
        big.unlink()
    finally:
        gateway.shutdown()
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
