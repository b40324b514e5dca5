"""Which remote names a job may use (pure): s3://bucket/key objects and presigned URLs.

Everything here is data in, data out, so the allow-list rules are tested in milliseconds.
A refusal is `source_not_allowed`, exactly like a path outside the media roots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from spooler.config import S3Settings
from spooler.errors import ErrorCode, JobError

REMOTE_PREFIXES = ("s3://", "https://", "http://")
# S3's bucket naming rules (lowercase, digits, dots, hyphens; 3-63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class S3Object:
    """An object read or written with the daemon's own credentials."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class SignedUrl:
    """A presigned URL made by the web app: a bearer credential, never logged as is."""

    url: str
    host: str

    @property
    def redacted(self) -> str:
        return redact(self.url)


Remote = S3Object | SignedUrl


def is_remote(name: str) -> bool:
    return name.startswith(REMOTE_PREFIXES)


def redact(url: str) -> str:
    """A URL without its query and user info (where a presigned URL keeps its signature)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _refuse(name: str, why: str) -> JobError:
    shown = redact(name) if "://" in name else name
    return JobError(ErrorCode.SOURCE_NOT_ALLOWED, f"{shown!r} {why}", {"source": shown})


def _key_problem(key: str) -> str | None:
    if not key or len(key.encode()) > _MAX_KEY_BYTES:
        return f"needs an object key of 1-{_MAX_KEY_BYTES} bytes"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return "has control characters in its key"
    if any(part in (".", "..") for part in key.split("/")):
        # Sent as they are (path-style), a proxy or server that normalises paths would
        # read them as another bucket's.
        return "has '.' or '..' components in its key"
    return None


def parse_s3(name: str, settings: S3Settings) -> S3Object:
    """`s3://bucket/key` in an allowed bucket, or source_not_allowed."""
    if not name.startswith("s3://"):
        raise _refuse(name, "is not an s3:// URI")
    bucket, _, key = name[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise _refuse(name, "does not name a valid bucket")
    if bucket not in settings.allowed_buckets:
        raise _refuse(name, "is in a bucket outside the allow-list (s3.allowed_buckets)")
    problem = _key_problem(key)
    if problem:
        raise _refuse(name, problem)
    return S3Object(bucket, key)


def parse_url(url: str, settings: S3Settings) -> SignedUrl:
    """An https URL to an allowed host (http only for a host allowed for it), or refused."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise _refuse(url, "is not a valid URL") from exc
    host = (parts.hostname or "").lower()
    if parts.username is not None or parts.password is not None:
        raise _refuse(url, "carries user info")
    if parts.fragment or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise _refuse(url, "has a fragment, spaces or control characters")
    if host not in [h.lower() for h in settings.allowed_url_hosts]:
        raise _refuse(url, "is on a host outside the allow-list (s3.allowed_url_hosts)")
    if parts.scheme == "http" and host not in [h.lower() for h in settings.http_hosts]:
        raise _refuse(url, "uses plain http on a host not allowed for it (s3.http_hosts)")
    if parts.scheme not in ("https", "http"):
        raise _refuse(url, "is not an https URL")
    return SignedUrl(url, host)


def parse_remote(name: str, settings: S3Settings) -> Remote:
    """A job's remote source name checked against the operator's allow-lists."""
    if name.startswith("s3://"):
        return parse_s3(name, settings)
    return parse_url(name, settings)


@dataclass(frozen=True)
class S3Destination:
    """`output.destination: s3://bucket/prefix/`: every output lands under the prefix."""

    bucket: str
    prefix: str

    def key(self, job_id: str, name: str) -> str:
        return f"{self.prefix}{job_id}/{name}"

    def uri(self, job_id: str, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(job_id, name)}"


def parse_destination(uri: str, settings: S3Settings) -> S3Destination:
    """A destination prefix in an allowed bucket; it ends with '/' (a folder, not a key)."""
    if not uri.startswith("s3://") or not uri.endswith("/"):
        raise _refuse(uri, "must be s3://bucket/prefix/ (ending with '/')")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    parse_s3(f"s3://{bucket}/x", settings)  # the bucket's own checks
    if prefix and any(part in ("", ".", "..") for part in prefix[:-1].split("/")):
        raise _refuse(uri, "must not contain empty, '.' or '..' components")
    problem = _key_problem(prefix + "x")
    if problem:
        raise _refuse(uri, problem)
    return S3Destination(bucket, prefix)
