"""Loopback helpers for the S3 tests: a TCP proxy that cuts connections, and small HTTP
servers that redirect or refuse (what moto, which checks no signature, cannot show)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from spooler.s3.outputs import part_ranges

# The test server's keys, found by boto3's standard chain in the environment.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "spooler-test-key",
    "AWS_SECRET_ACCESS_KEY": "spooler-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to `target`; the first `cuts` connections that carry more
    than `after_bytes` are cut there (a network fault): bytes from the server (a download),
    or with `uploads`, bytes to the server (an upload). `upload_rate` (bytes per second,
    per connection) makes uploads slow; `uploaded` counts the bytes sent to the server.
    While `refusing`, every connection is closed at once (the server unreachable)."""

    def __init__(
        self,
        target_port: int,
        *,
        cuts: int = 0,
        after_bytes: int = 0,
        uploads: bool = False,
        upload_rate: float | None = None,
    ) -> None:
        self.target_port, self.cuts_left, self.after_bytes = target_port, cuts, after_bytes
        self.uploads, self.upload_rate = uploads, upload_rate
        self.cut = 0
        self.uploaded = 0
        self.refusing = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                doomed = self.cuts_left > 0
            limit = self.after_bytes if doomed else None
            up, down = (limit, None) if self.uploads else (None, limit)
            threading.Thread(
                target=self._pipe, args=(client, server, up, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(server, client, down, False), daemon=True
            ).start()

    def _pipe(
        self, src: socket.socket, dst: socket.socket, limit: int | None, upward: bool
    ) -> None:
        sent = 0
        rate = self.upload_rate if upward else None
        try:
            while data := src.recv(16384 if rate else 65536):
                if rate:
                    time.sleep(len(data) / rate)
                if upward:
                    with self._lock:
                        self.uploaded += len(data)
                if limit is not None and sent + len(data) > limit:
                    with self._lock:
                        if self.cuts_left > 0:
                            self.cuts_left -= 1
                            self.cut += 1
                            dst.sendall(data[: max(0, limit - sent)])
                            raise ConnectionResetError("cut by the test proxy")
                    limit = None
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._listener.close()


@contextmanager
def answering(status: int, headers: dict[str, str]) -> Iterator[int]:
    """A loopback HTTP server answering every GET with `status` and `headers`; its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def part_digests(data: bytes, part_bytes: int) -> list[bytes]:
    """The SHA-256 of each multipart part of `data`, as the upload cuts it."""
    return [hashlib.sha256(data[o : o + n]).digest() for o, n in part_ranges(len(data), part_bytes)]
