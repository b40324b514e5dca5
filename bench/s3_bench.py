"""Benchmark of S3 storage against moto_server on loopback (docs/s3.md), ratios in one run:

    .venv/bin/python bench/s3_bench.py                 # 10 min source, 256 MB upload
    .venv/bin/python bench/s3_bench.py --upload-mb 1024 --only upload
    .venv/bin/python bench/s3_bench.py --only full --chunk-kib 256,1024,4096 --repeat 3

  range     bytes fetched for a 30 s stream copy from the middle of a 10-minute source (the
            packet index from the moov, then ffmpeg -ss/-t through the gateway) / object size
            (target <= 0.1)
  full      a full re-encode read from S3 through the gateway / the same from local disk
            (wall; target <= 1.15), for each gateway chunk size; runs alternate local and
            remote, the ratio is of the medians
  upload    S3Uploads (multipart, SHA-256 parts, journal-ready) / boto3's own upload_file of
            the same file (wall; target <= 1.1); the two alternate, medians compared

The load average is printed with the figures (other work on the machine skews walls).

moto keeps objects in memory and answers from the same machine: the network costs of real S3
are not in these figures, only the overheads of the gateway and of the upload path.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
sys.path.insert(0, str(ROOT.parent))

from spooler.config import S3Settings  # noqa: E402
from spooler.ffmpeg import find_ffmpeg  # noqa: E402
from spooler.mediainfo import REMOTE_PROTOCOLS  # noqa: E402
from spooler.mp4index import mp4_video_index  # noqa: E402
from spooler.s3.client import make_client  # noqa: E402
from spooler.s3.gateway import SourceGateway  # noqa: E402
from spooler.s3.locations import S3Object  # noqa: E402
from spooler.s3.outputs import S3Uploads  # noqa: E402
from spooler.s3.remoteindex import http_fetch  # noqa: E402
from spooler.s3.upstream import S3Upstream  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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


def source(ffmpeg: str, seconds: int, bitrate: str | None = None) -> Path:
    """testsrc2 + a tone; at x264's default quality (tiny: testsrc2 compresses well) or at a
    camera-like `bitrate` (noise added so that the encoder has to spend it)."""
    path = CACHE / f"s3-source-{seconds}s{'-' + bitrate if bitrate else ''}.mp4"
    video = f"testsrc2=size=640x360:rate=30:duration={seconds}"
    rate: list[str] = []
    if bitrate:
        video += ",noise=alls=40:allf=t"
        rate = ["-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate]
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-y",
             "-f", "lavfi", "-i", video,
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
             "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", *rate,
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


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_range(
    args: argparse.Namespace, ffmpeg: str, client: S3Client, work: Path
) -> dict[str, float]:
    results: dict[str, float] = {}
    long = source(ffmpeg, args.seconds)
    client.upload_file(str(long), "bench", "long.mp4")
    for kib in (int(k) for k in args.chunk_kib.split(",")):
        gateway = SourceGateway(chunk_bytes=kib * 1024)
        try:
            opened = gateway.open(S3Upstream(client, S3Object("bench", "long.mp4"), 4))
            index = mp4_video_index(
                http_fetch(opened.url), opened.size, {"protocol_whitelist": REMOTE_PROTOCOLS}
            )
            assert index is not None and index.packets
            index_bytes = gateway.fetched(opened)
            middle = args.seconds // 2
            ffmpeg_run(ffmpeg, ["-ss", str(middle), "-i", opened.url, "-t", "30", "-c", "copy",
                                str(work / "range.mp4")], REMOTE_PROTOCOLS)  # fmt: skip
            fetched = gateway.fetched(opened)
        finally:
            gateway.shutdown()
        results[f"range_fetched_ratio_chunk_{kib}k"] = fetched / opened.size
        results[f"range_index_ratio_chunk_{kib}k"] = index_bytes / opened.size
        results[f"range_copy_ratio_chunk_{kib}k"] = (fetched - index_bytes) / opened.size
    return results


def bench_full(
    args: argparse.Namespace, ffmpeg: str, client: S3Client, work: Path
) -> dict[str, float]:
    results: dict[str, float] = {}
    short = source(ffmpeg, args.full_seconds, args.full_bitrate)
    client.upload_file(str(short), "bench", "short.mp4")
    encode = ["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"]
    for kib in (int(k) for k in args.chunk_kib.split(",")):
        gateway = SourceGateway(chunk_bytes=kib * 1024)
        try:
            local, remote = [], []
            for _ in range(args.repeat):
                local.append(
                    ffmpeg_run(
                        ffmpeg, ["-i", f"file:{short}", *encode, str(work / "l.mp4")], "file"
                    )
                )
                opened = gateway.open(S3Upstream(client, S3Object("bench", "short.mp4"), 4))
                remote.append(ffmpeg_run(ffmpeg, ["-i", opened.url, *encode, str(work / "r.mp4")],
                                         REMOTE_PROTOCOLS))  # fmt: skip
                gateway.close(opened)
        finally:
            gateway.shutdown()
        results[f"full_wall_ratio_chunk_{kib}k"] = statistics.median(remote) / statistics.median(
            local
        )
        results[f"full_local_seconds_chunk_{kib}k"] = statistics.median(local)
        results[f"full_remote_seconds_chunk_{kib}k"] = statistics.median(remote)
    results["full_source_bytes"] = short.stat().st_size
    return results


def bench_upload(
    args: argparse.Namespace, client: S3Client, settings: S3Settings, work: Path
) -> dict[str, float]:
    big = work / "upload.bin"
    with big.open("wb") as out:
        for _ in range(args.upload_mb):
            out.write(os.urandom(1024 * 1024))
    uploads = S3Uploads(client, settings)
    ours, theirs = [], []
    try:
        for turn in range(args.upload_repeat):
            begin = time.perf_counter()
            client.upload_file(str(big), "bench", f"boto3-{turn}.bin")
            theirs.append(time.perf_counter() - begin)
            client.delete_object(Bucket="bench", Key=f"boto3-{turn}.bin")
            obj = S3Object("bench", f"ours-{turn}.bin")
            begin = time.perf_counter()
            uploads.upload(obj, uploads.begin(obj), big)
            ours.append(time.perf_counter() - begin)
            client.delete_object(Bucket="bench", Key=obj.key)
    finally:
        big.unlink()
    return {
        "upload_mb": args.upload_mb,
        "upload_wall_ratio": statistics.median(ours) / statistics.median(theirs),
        "upload_seconds": statistics.median(ours),
        "boto3_upload_file_seconds": statistics.median(theirs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600, help="source length")
    parser.add_argument("--full-seconds", type=int, default=60, help="re-encoded length")
    parser.add_argument("--full-bitrate", help="re-encoded source's bitrate (e.g. 10M)")
    parser.add_argument("--upload-mb", type=int, default=256, help="size of the uploaded file")
    parser.add_argument("--upload-repeat", type=int, default=1, help="upload pairs (median)")
    parser.add_argument(
        "--chunk-kib",
        default=str(S3Settings().chunk_bytes // 1024),
        help="gateway chunk sizes, comma-separated (default: the daemon's s3.chunk_bytes)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="re-encode pairs per chunk size")
    parser.add_argument("--only", default="range,full,upload", help="sections to run")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    ffmpeg = find_ffmpeg(None)
    proc, endpoint = start_moto()
    sections = set(args.only.split(","))
    results: dict[str, float] = {}
    print(json.dumps({"loadavg_start": loadavg()}))
    try:
        settings = S3Settings(endpoint_url=endpoint, allowed_buckets=["bench"])
        client = make_client(settings)
        client.create_bucket(Bucket="bench")
        work = CACHE / "s3-work"
        work.mkdir(parents=True, exist_ok=True)
        if "range" in sections:
            results.update(bench_range(args, ffmpeg, client, work))
        if "full" in sections:
            results.update(bench_full(args, ffmpeg, client, work))
        if "upload" in sections:
            # moto assembles a 1 GB object in Python for well over the default 20 s read
            # timeout (real S3 keeps the connection alive meanwhile): both clients wait.
            slow = settings.model_copy(update={"timeout_seconds": 600.0})
            results.update(bench_upload(args, make_client(slow), slow, work))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))
    print(json.dumps({"loadavg_end": loadavg()}))


if __name__ == "__main__":
    main()
