"""The source gateway: a loopback HTTP endpoint inside the daemon that ffmpeg and PyAV read
remote sources through.

Why a gateway rather than handing ffmpeg a presigned URL:
- no secret leaves the daemon: ffmpeg's argv, job.log, the preflight and the status only
  ever see http://127.0.0.1:<port>/<opaque token>; the token means nothing outside this
  process and dies with the job;
- each range request is signed when it is made, so a job outlives short-lived credentials
  (STS, instance roles), and an expired URL is one clear 403 (source_forbidden) rather than
  ffmpeg reconnecting forever;
- the allow-lists were checked when the source was opened, redirects are never followed,
  and every read is pinned to the ETag seen then (If-Match: a source that changes mid-job
  fails the attempt with source_changed);
- the bytes fetched are counted, which is how the tests prove a range export does not
  download the whole object;
- ffmpeg keeps `-protocol_whitelist http,tcp` to one loopback port: an object that is an
  HLS playlist or an ffconcat script still meets the demuxer allow-list, and anything it
  names is either refused by that list or an unknown token here (404).
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from spooler.errors import JobError
from spooler.s3.upstream import Upstream

# What a reader through the gateway needs: http over tcp, nothing else (no tls, no file).
GATEWAY_PROTOCOLS = "http,tcp"
# Small socket buffers keep read-ahead (bytes fetched but never used) near one chunk.
SEND_BUFFER_BYTES = 64 * 1024
# Each response starts with small chunks (a probe, or a seek, reads little before the reader
# moves on: little is fetched in vain); then each chunk is as large as what the response has
# sent so far, up to `chunk_bytes`, so a long sequential read costs few requests (each
# signed, each a round trip). bench/s3_bench.py: a 10 Mbit/s re-encode through fixed 256 KiB
# chunks took 1.83x the local wall, through 4 MiB ones 1.02x.
FIRST_CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a Range header asks for (pure); the whole object without
    one; None when it cannot be satisfied (416)."""
    if size == 0:
        return None
    if not header:
        return 0, size - 1
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None


@dataclass
class _Entry:
    upstream: Upstream
    size: int
    etag: str
    fetched: int = 0
    error: JobError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class GatewaySource:
    """A remote source opened for one job: what readers get instead of the real address."""

    url: str  # http://127.0.0.1:<port>/<token>
    token: str
    shown: str  # the remote name as it may be logged
    size: int
    etag: str


class SourceGateway:
    """One per daemon; sources are opened per job and closed when the job ends."""

    def __init__(self, chunk_bytes: int = 4 * 1024 * 1024) -> None:
        self.chunk_bytes = chunk_bytes
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        gateway = self

        class Handler(_Handler):
            owner = gateway

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3-gateway", daemon=True
        )
        self._thread.start()

    def open(self, upstream: Upstream) -> GatewaySource:
        """Pin the object (size, ETag) and give it a token; JobError if it cannot be read."""
        pinned = upstream.pin()
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._entries[token] = _Entry(upstream, pinned.size, pinned.etag)
        return GatewaySource(
            f"http://127.0.0.1:{self.port}/{token}", token, upstream.shown, pinned.size, pinned.etag
        )

    def fetched(self, source: GatewaySource) -> int:
        """Bytes fetched from the remote storage for this source so far."""
        entry = self._entries.get(source.token)
        return entry.fetched if entry else 0

    def error(self, source: GatewaySource) -> JobError | None:
        """The first error a read met (to explain an ffmpeg failure by its real cause)."""
        entry = self._entries.get(source.token)
        return entry.error if entry else None

    def close(self, source: GatewaySource) -> None:
        with self._lock:
            self._entries.pop(source.token, None)

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _entry(self, token: str) -> _Entry | None:
        with self._lock:
            return self._entries.get(token)


class _Handler(BaseHTTPRequestHandler):
    owner: SourceGateway
    protocol_version = "HTTP/1.1"  # keep-alive: ffmpeg reuses the connection across seeks

    def setup(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: request lines carry tokens, and the daemon logs its own events."""

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        entry = self.owner._entry(self.path.lstrip("/"))
        if entry is None:
            self._empty(404)
            return
        wanted = parse_range(self.headers.get("Range"), entry.size)
        if wanted is None:
            self._empty(416, {"Content-Range": f"bytes */{entry.size}"})
            return
        start, end = wanted
        self.send_response(206 if self.headers.get("Range") else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if self.headers.get("Range"):
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        self.end_headers()
        if body:
            self._stream(entry, start, end)

    def _stream(self, entry: _Entry, start: int, end: int) -> None:
        """Fetch and send one chunk at a time, growing: a reader that seeks away (closes)
        stops the fetching, so at most a chunk plus the socket buffer is read ahead."""
        position = start
        while position <= end:
            # As much as this response has already sent: read-ahead grows with the read.
            chunk = min(max(FIRST_CHUNK_BYTES, position - start), self.owner.chunk_bytes)
            last = min(end, position + chunk - 1)
            try:
                data = entry.upstream.read(position, last, entry.etag)
            except JobError as exc:
                with entry.lock:
                    entry.error = entry.error or exc
                self.close_connection = True  # a short body: the reader sees an error
                return
            with entry.lock:
                entry.fetched += len(data)
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            position = last + 1

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
