"""Pure delivery decisions: which URLs and addresses may be reached, when to retry.

Everything here is a function of data (and of a random number or the time passed in), so
the rules are tested in milliseconds; transport.py applies them to real sockets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from urllib.parse import urlsplit


class DeliveryError(StrEnum):
    """Why an attempt failed (the `lastError.code` of an outbox record)."""

    BAD_URL = "bad_url"
    NOT_ALLOWED = "not_allowed"  # per-job host outside webhooks.allowed_hosts, or http://
    PRIVATE_ADDRESS = "private_address"  # resolves to loopback/private/link-local/...
    RESOLVE_FAILED = "resolve_failed"
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    REDIRECT = "redirect_not_followed"
    HTTP_STATUS = "http_status"  # any other non-2xx answer
    GONE = "gone"  # 410: the receiver asked us to stop
    EXPIRED = "expired"  # retry schedule exhausted
    COMMAND_FAILED = "command_failed"
    UNAUTHENTIC = "unauthentic_record"  # an outbox record this daemon's secret did not seal
    NO_SECRET = "no_secret"  # noqa: S105 (an error code, not a secret)


# Refusals a retry must not try to get around (or cannot cure): given up at once.
PERMANENT = frozenset(
    {
        DeliveryError.BAD_URL,
        DeliveryError.NOT_ALLOWED,
        DeliveryError.PRIVATE_ADDRESS,
        DeliveryError.GONE,
        DeliveryError.NO_SECRET,
        DeliveryError.UNAUTHENTIC,
    }
)


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str  # lower case, without brackets
    port: int
    target: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def host_matches(host: str, patterns: list[str]) -> bool:
    """Exact host names, or `*.example.com` for any name below example.com."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def parse_endpoint(url: str, *, per_job: bool, allowed_hosts: list[str]) -> Endpoint | str:
    """The endpoint of `url`, or why it may not be used."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{DeliveryError.BAD_URL}: {exc}"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{DeliveryError.BAD_URL}: an http(s) URL with a host is required"
    if parts.username or parts.password:
        return f"{DeliveryError.BAD_URL}: credentials in the URL are not allowed"
    if not url.isascii():
        # An HTTP request line and Host header are ASCII: write the host in punycode and
        # percent-encode the path.
        return f"{DeliveryError.BAD_URL}: non-ASCII characters (use punycode and %-encoding)"
    host = parts.hostname.lower().rstrip(".")
    try:
        host.encode("idna")  # a label over 63 characters, an empty one
    except UnicodeError as exc:
        return f"{DeliveryError.BAD_URL}: host {host!r}: {exc}"
    listed = host_matches(host, allowed_hosts)
    if per_job and not listed:
        return f"{DeliveryError.NOT_ALLOWED}: host {host!r} is not in webhooks.allowed_hosts"
    if parts.scheme == "http" and not listed:
        return f"{DeliveryError.NOT_ALLOWED}: http:// only for hosts in webhooks.allowed_hosts"
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return Endpoint(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target)


def callback_problem(url: str, allowed_hosts: list[str]) -> str | None:
    """Why a job's `callback.url` will never be delivered (for validation at claim time),
    or None. Addresses are checked later, at each attempt, after resolving."""
    endpoint = parse_endpoint(url, per_job=True, allowed_hosts=allowed_hosts)
    return endpoint if isinstance(endpoint, str) else None


def address_problem(address: str, host: str, allow_private: list[str]) -> str | None:
    """None if `address` (what `host` resolved to) may be connected to, else why not.

    Anything but a global unicast address (loopback, private, link-local such as the cloud
    metadata 169.254.169.254, CGNAT, multicast, reserved, IPv4-mapped forms of these) is
    refused unless the host name or a network containing the address is allow-listed.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{DeliveryError.RESOLVE_FAILED}: {address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return None
    for entry in allow_private:
        if "/" in entry or _is_ip(entry):
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return None
            except ValueError:
                continue
        elif host_matches(host, [entry]):
            return None
    return (
        f"{DeliveryError.PRIVATE_ADDRESS}: {host} resolves to {ip}, a non-public address "
        "(allow it with webhooks.allow_private)"
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    attempts: int,
    schedule: list[float],
    *,
    jitter: float,
    rand: float,
    retry_after: float | None = None,
    max_retry_after: float = 86400,
) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None: give up.

    `rand` in [0, 1) spreads each delay by ±jitter so that a receiver coming back is not
    hit by every queued event at once; a longer Retry-After wins, up to max_retry_after.
    """
    if attempts < 1 or attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * (1 + jitter * (2 * rand - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return max(0.0, delay)


def classify_status(code: int) -> DeliveryError | None:
    """None for success (2xx); redirects are never followed (the Location could be anywhere)."""
    if 200 <= code < 300:
        return None
    if code == 410:
        return DeliveryError.GONE
    if 300 <= code < 400:
        return DeliveryError.REDIRECT
    return DeliveryError.HTTP_STATUS
