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

import functools
import re
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from spooler.errors import ErrorCode, JobError
from spooler.s3.upstream import Upstream

# Small socket buffers keep read-ahead (bytes fetched but never used) near one chunk.
SEND_BUFFER_BYTES = 64 * 1024
# Recently fetched chunks, shared by every reader of a source (a job opens one 5-7 times:
# probe, index, audio end, each command, the remux's video and audio readers, which walk
# the same interleaved bytes side by side). Bounded, per daemon.
CACHE_BYTES = 32 * 1024 * 1024
FETCH_WAIT_SECONDS = 120.0  # longer than one chunk's retries take
# The cache's unit, and each response's first request: a probe, or a seek, reads little
# before the reader moves on, so little is fetched in vain. Then each request covers as much
# as the response has already sent, up to `chunk_bytes`, so a long sequential read costs few
# requests (each signed, each a round trip). bench/s3_bench.py: a 10 Mbit/s re-encode
# through fixed 256 KiB requests took 1.83x the local wall, through 4 MiB ones 1.02x.
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


class ChunkCache:
    """Chunks of opened sources (token, chunk number) -> bytes, least recently used out
    first, at most `limit` bytes. A token is one pinned version of an object, so a cached
    chunk is always the bytes the job's ETag names."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self._chunks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], threading.Event] = {}

    def get_or_fetch(
        self, token: str, number: int, count: int, fetch: Callable[[int, int], list[bytes]]
    ) -> bytes:
        """Chunk `number`: cached, else fetched once with up to `count - 1` chunks after it
        that nobody has or is fetching (`fetch(first, n)` returns n chunks, in one request).
        Readers walking the same bytes side by side (an angle's video and its audio) wait
        for one fetch instead of making two. If that fetch fails, each waiting reader
        fetches for itself (and meets the error)."""
        key = (token, number)
        claimed: list[tuple[str, int]] = []
        with self._lock:
            data = self._chunks.get(key)
            if data is not None:
                self._chunks.move_to_end(key)
                return data
            pending = self._pending.get(key)
            if pending is None:
                for n in range(number, number + max(1, count)):
                    if (token, n) in self._chunks or (token, n) in self._pending:
                        break
                    self._pending[(token, n)] = threading.Event()
                    claimed.append((token, n))
        if pending is not None:
            pending.wait(FETCH_WAIT_SECONDS)
            return self.get(key) or fetch(number, 1)[0]
        try:
            chunks = fetch(number, len(claimed))
            for claimed_key, chunk in zip(claimed, chunks, strict=False):
                self.put(claimed_key, chunk)
            return chunks[0]
        finally:
            with self._lock:
                for claimed_key in claimed:
                    self._pending.pop(claimed_key).set()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            data = self._chunks.get(key)
            if data is not None:
                self._chunks.move_to_end(key)
            return data

    def put(self, key: tuple[str, int], data: bytes) -> None:
        with self._lock:
            old = self._chunks.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            self._chunks[key] = data
            self._bytes += len(data)
            while self._bytes > self.limit and self._chunks:
                _, dropped = self._chunks.popitem(last=False)
                self._bytes -= len(dropped)

    def drop(self, token: str) -> None:
        with self._lock:
            for key in [k for k in self._chunks if k[0] == token]:
                self._bytes -= len(self._chunks.pop(key))


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

    def __init__(self, chunk_bytes: int = 4 * 1024 * 1024, cache_bytes: int = CACHE_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self.cache = ChunkCache(cache_bytes)
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

    def clear_error(self, source: GatewaySource) -> None:
        """Forget the errors met so far (the reads after this are the ones that count)."""
        entry = self._entries.get(source.token)
        if entry is not None:
            with entry.lock:
                entry.error = None

    def close(self, source: GatewaySource) -> None:
        with self._lock:
            self._entries.pop(source.token, None)
        self.cache.drop(source.token)

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
        token = self.path.lstrip("/")
        entry = self.owner._entry(token)
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
            self._stream(token, entry, start, end)

    def _stream(self, token: str, entry: _Entry, start: int, end: int) -> None:
        """Send [start, end] a cached unit at a time: a reader that seeks away (closes)
        stops the fetching, so at most one request plus the socket buffer is read ahead.
        Units are aligned (unit n is bytes [n * unit, (n + 1) * unit)) and cached, so
        readers of the same bytes share one fetch; a missing unit is fetched together with
        the ones after it, as many as this response has already sent (up to chunk_bytes).
        A read smaller than a unit that stops before the end of the object, and whose unit
        is not cached, fetches just its bytes (the index's keyframe prefixes)."""
        unit = min(FIRST_CHUNK_BYTES, self.owner.chunk_bytes)
        position = start
        while position <= end:
            number = position // unit
            first = number * unit
            data = self.owner.cache.get((token, number))
            try:
                if data is None and end - position + 1 < unit and end < entry.size - 1:
                    data, first = self._fetch(entry, position, end), position
                elif data is None:
                    grown = min(max(unit, position - start), self.owner.chunk_bytes)
                    data = self.owner.cache.get_or_fetch(
                        token,
                        number,
                        grown // unit,
                        functools.partial(self._fetch_units, entry, unit),
                    )
            except JobError as exc:
                with entry.lock:
                    entry.error = entry.error or exc
                self.close_connection = True  # a short body: the reader sees an error
                return
            piece = data[position - first : end - first + 1]
            if not piece:  # the upstream sent less than the object's pinned size
                with entry.lock:
                    entry.error = entry.error or JobError(
                        ErrorCode.STORAGE_FAILED, "the storage sent less than the object's size"
                    )
                self.close_connection = True
                return
            try:
                self.wfile.write(piece)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            position += len(piece)

    @staticmethod
    def _fetch(entry: _Entry, start: int, end: int) -> bytes:
        data = entry.upstream.read(start, end, entry.etag)
        with entry.lock:
            entry.fetched += len(data)
        return data

    @classmethod
    def _fetch_units(cls, entry: _Entry, unit: int, number: int, count: int) -> list[bytes]:
        """Units number .. number + count - 1 (the last one may end with the object), in
        one request."""
        first = number * unit
        last = min(entry.size - 1, (number + count) * unit - 1)
        data = cls._fetch(entry, first, last)
        return [data[i : i + unit] for i in range(0, max(len(data), 1), unit)]

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
