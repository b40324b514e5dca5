"""The two ways an event leaves the daemon: an HTTP POST and a local command.

HTTP: the host name is resolved by an injectable resolver, every address is checked
(policy.address_problem) and the socket is connected to that checked address itself, so a
second DNS answer (rebinding) can never redirect it. TLS still verifies the certificate for
the host name (SNI). No proxies, no redirects, capped response body, timeouts on connect
and on every read.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from spooler.webhooks.policy import DeliveryError, Endpoint, address_problem

Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class TransportError(Exception):
    def __init__(self, code: DeliveryError, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes  # at most max_response_bytes
    address: str
    elapsed: float


@dataclass(frozen=True)
class HttpLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_response_bytes: int = 65536
    allow_private: list[str] = field(default_factory=list)


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket we connected (and checked) ourselves."""

    def __init__(self, host: str, port: int, sock: socket.socket, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._pinned = sock

    def connect(self) -> None:
        self.sock = self._pinned


def _connect(
    endpoint: Endpoint, resolver: Resolver, limits: HttpLimits
) -> tuple[socket.socket, str]:
    try:
        addresses = resolver(endpoint.host, endpoint.port)
    except OSError as exc:
        raise TransportError(DeliveryError.RESOLVE_FAILED, f"{endpoint.host}: {exc}") from exc
    if not addresses:
        raise TransportError(DeliveryError.RESOLVE_FAILED, f"{endpoint.host}: no address")
    refusals: list[str] = []
    failures: list[str] = []
    for address in addresses:
        problem = address_problem(address, endpoint.host, limits.allow_private)
        if problem is not None:
            refusals.append(problem)
            continue
        try:
            sock = socket.create_connection(
                (address, endpoint.port), timeout=limits.connect_timeout
            )
        except TimeoutError:
            failures.append(f"{address}: connect timed out after {limits.connect_timeout} s")
            continue
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or exc}")
            continue
        return sock, address
    if failures:
        code = (
            DeliveryError.TIMEOUT
            if all("timed out" in f for f in failures)
            else (DeliveryError.CONNECT_FAILED)
        )
        raise TransportError(code, "; ".join(failures))
    raise TransportError(DeliveryError.PRIVATE_ADDRESS, refusals[0].split(": ", 1)[1])


def post(
    endpoint: Endpoint,
    body: bytes,
    headers: Mapping[str, str],
    *,
    resolver: Resolver,
    limits: HttpLimits,
    tls: ssl.SSLContext | None = None,
) -> HttpAnswer:
    """One POST; raises TransportError for anything that is not an HTTP answer."""
    started = time.monotonic()
    sock, address = _connect(endpoint, resolver, limits)
    try:
        sock.settimeout(limits.read_timeout)
        if endpoint.scheme == "https":
            context = tls or ssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
            except (ssl.SSLError, ssl.CertificateError) as exc:
                raise TransportError(DeliveryError.CONNECT_FAILED, f"TLS: {exc}") from exc
        conn = _PinnedConnection(endpoint.host, endpoint.port, sock, limits.read_timeout)
        # The timeout bounds each read; this bounds the whole answer (a receiver that sends
        # a byte now and then would otherwise hold a delivery thread for ever).
        expired = threading.Event()

        def expire(held: socket.socket = sock) -> None:
            expired.set()
            with contextlib.suppress(OSError):
                held.shutdown(socket.SHUT_RDWR)

        deadline = threading.Timer(limits.read_timeout, expire)
        deadline.daemon = True
        deadline.start()
        try:
            conn.request(
                "POST",
                endpoint.target,
                body=body,
                headers={**headers, "Host": endpoint.host_header, "Connection": "close"},
            )
            response = conn.getresponse()
            data = response.read(limits.max_response_bytes) if limits.max_response_bytes else b""
            return HttpAnswer(
                status=response.status,
                headers={k.lower(): v for k, v in response.getheaders()},
                body=data,
                address=address,
                elapsed=time.monotonic() - started,
            )
        except TimeoutError as exc:
            raise TransportError(
                DeliveryError.TIMEOUT, f"no answer within {limits.read_timeout} s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set():
                raise TransportError(
                    DeliveryError.TIMEOUT, f"no whole answer within {limits.read_timeout} s"
                ) from exc
            raise TransportError(
                DeliveryError.CONNECT_FAILED, f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            deadline.cancel()
            conn.close()
    finally:
        with contextlib.suppress(OSError):
            sock.close()


@dataclass(frozen=True)
class CommandResult:
    returncode: int | None  # None: killed at the timeout
    output_tail: str
    elapsed: float


def run_command(argv: list[str], stdin: bytes, *, timeout: float) -> CommandResult:
    """Run a hook (an argv, never a shell) in its own process group, the payload on stdin;
    at the timeout the whole group is killed."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return CommandResult(127, f"cannot run {argv[0]!r}: {exc.strerror or exc}", 0.0)
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    tail = out[-2000:].decode("utf-8", "replace") if out else ""
    return CommandResult(code, tail, time.monotonic() - started)
