"""Reading one remote object by range: from S3 with the daemon's credentials, or from a
presigned URL. Each read is its own request, signed when it is made (credentials that are
refreshed mid-job apply), pinned to the ETag seen when the source was opened (`If-Match`),
and retried on network faults and 5xx. Redirects are never followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from spooler.errors import ErrorCode, JobError
from spooler.s3.locations import S3Object, SignedUrl

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Pinned:
    """The object version a job reads: every later range must match this ETag."""

    size: int
    etag: str


class Upstream(Protocol):
    shown: str  # the name as it may be logged (no query, no signature)

    def pin(self) -> Pinned:
        """Size and ETag of the object now; JobError if it cannot be read."""
        ...

    def read(self, start: int, end: int, etag: str) -> bytes:
        """Bytes [start, end] (inclusive) of that version; JobError when retries are spent."""
        ...


def status_error(status: int, shown: str) -> JobError | None:
    """The job error an HTTP status means for a source (pure); None for success."""
    details = {"source": shown, "status": status}
    if status in (200, 206):
        return None
    if 300 <= status < 400:
        return JobError(ErrorCode.SOURCE_NOT_ALLOWED, f"{shown!r} redirects elsewhere", details)
    if status in (401, 403):
        return JobError(ErrorCode.SOURCE_FORBIDDEN, f"{shown!r}: access denied", details)
    if status in (404, 410):
        return JobError(ErrorCode.SOURCE_MISSING, f"{shown!r} does not exist", details)
    if status == 412:
        return JobError(ErrorCode.SOURCE_CHANGED, f"{shown!r} changed during the job", details)
    if status == 416:
        return JobError(ErrorCode.SOURCE_UNREADABLE, f"{shown!r}: range not satisfiable", details)
    if status == 429 or status >= 500:
        return JobError(ErrorCode.STORAGE_FAILED, f"{shown!r}: server said {status}", details)
    return JobError(ErrorCode.SOURCE_UNREADABLE, f"{shown!r}: server said {status}", details)


def retrying(attempts: int, shown: str, call: Callable[[], T]) -> T:
    """Run `call`, retrying transient failures (network, 5xx) with a short backoff."""
    last: JobError | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)])
        try:
            return call()
        except JobError as exc:
            if not exc.transient:
                raise
            last = exc
        except (BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
            last = JobError(
                ErrorCode.STORAGE_FAILED,
                f"{shown!r}: {type(exc).__name__}",
                {"source": shown},
            )
    assert last is not None
    raise last


class S3Upstream:
    def __init__(self, client: S3Client, obj: S3Object, attempts: int) -> None:
        self.client, self.obj, self.attempts = client, obj, attempts
        self.shown = obj.uri

    def _error(self, exc: ClientError) -> JobError:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return status_error(status, self.shown) or JobError(
            ErrorCode.SOURCE_UNREADABLE, f"{self.shown!r}: {exc}", {"source": self.shown}
        )

    def pin(self) -> Pinned:
        def call() -> Pinned:
            try:
                head = self.client.head_object(Bucket=self.obj.bucket, Key=self.obj.key)
            except ClientError as exc:
                raise self._error(exc) from exc
            return Pinned(int(head["ContentLength"]), head["ETag"])

        return retrying(self.attempts, self.shown, call)

    def read(self, start: int, end: int, etag: str) -> bytes:
        def call() -> bytes:
            try:
                got = self.client.get_object(
                    Bucket=self.obj.bucket,
                    Key=self.obj.key,
                    Range=f"bytes={start}-{end}",
                    IfMatch=etag,
                )
            except ClientError as exc:
                raise self._error(exc) from exc
            with got["Body"] as body:
                data = body.read()
            if len(data) != end - start + 1:
                raise JobError(ErrorCode.STORAGE_FAILED, f"{self.shown!r}: short read")
            return data

        return retrying(self.attempts, self.shown, call)


class UrlUpstream:
    """A presigned GET URL. It is signed for GET only, so the size comes from a 1-byte range."""

    def __init__(self, url: SignedUrl, attempts: int, timeout: float) -> None:
        self.url, self.attempts = url, attempts
        self.shown = url.redacted
        self.pool = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout)
        )

    def _get(self, headers: dict[str, str], length: int) -> tuple[urllib3.BaseHTTPResponse, bytes]:
        """A range GET; the body is read only from a 206 and only `length` bytes of it (a
        server that ignores Range would otherwise send the whole object)."""
        response = self.pool.request(
            "GET", self.url.url, headers=headers, redirect=False, preload_content=False
        )
        try:
            error = status_error(response.status, self.shown)
            if error is not None:
                raise error
            if response.status != 206:
                raise JobError(
                    ErrorCode.SOURCE_UNREADABLE,
                    f"{self.shown!r} does not answer range requests",
                    {"source": self.shown},
                )
            return response, response.read(length + 1)
        finally:
            if response.status == 206:
                response.release_conn()  # body read: the connection is reused
            else:
                response.close()  # body unread: never drained

    def pin(self) -> Pinned:
        def call() -> Pinned:
            response, _ = self._get({"Range": "bytes=0-0"}, 1)
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            etag = response.headers.get("ETag")
            if not total.isdigit() or not etag:
                raise JobError(
                    ErrorCode.SOURCE_UNREADABLE,
                    f"{self.shown!r} gives no size or ETag for a range request",
                    {"source": self.shown},
                )
            return Pinned(int(total), etag)

        return retrying(self.attempts, self.shown, call)

    def read(self, start: int, end: int, etag: str) -> bytes:
        def call() -> bytes:
            _, data = self._get(
                {"Range": f"bytes={start}-{end}", "If-Match": etag}, end - start + 1
            )
            if len(data) != end - start + 1:
                raise JobError(ErrorCode.STORAGE_FAILED, f"{self.shown!r}: short read")
            return data

        return retrying(self.attempts, self.shown, call)
