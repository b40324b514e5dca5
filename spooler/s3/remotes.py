"""The daemon's one door to remote sources: the allow-lists, then the loopback gateway.

One `RemoteSources` per daemon, handed to each attempt (runner.AttemptEnv, like the output
store), never a global. It costs nothing until a job names a remote source that the
settings allow: only then are boto3 (for s3:// objects) and the gateway's thread started,
so a daemon with empty allow-lists (the default) never imports boto3.

The allow-lists are read from the settings of each call (the running settings, which a
SIGHUP may change); the gateway, once started, lives until the daemon stops.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from spooler.config import S3Settings
from spooler.errors import ErrorCode, JobError
from spooler.mediainfo import RemoteMedia
from spooler.s3.locations import S3Object, parse_remote, redact

if TYPE_CHECKING:
    from spooler.s3.gateway import GatewaySource, SourceGateway


def shown_name(name: str) -> str:
    """A remote name as it may be logged: a URL without its query (where a presigned URL
    keeps its signature); an s3:// name as written (its key may contain '?')."""
    return name if name.startswith("s3://") else redact(name)


def not_enabled(name: str) -> JobError:
    shown = shown_name(name)
    return JobError(
        ErrorCode.SOURCE_NOT_ALLOWED,
        f"{shown!r} is a remote source, and this daemon allows none: the operator allows "
        "them with s3.allowed_buckets (s3:// objects) or s3.allowed_url_hosts (https URLs), "
        "see docs/s3.md",
        {"source": shown},
    )


class RemoteSources:
    """Opens remote sources for jobs through one lazily started SourceGateway."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gateway: SourceGateway | None = None
        self._clients: dict[tuple[Any, ...], Any] = {}

    def open(self, name: str, settings: S3Settings) -> GatewaySource:
        """Check `name` against the allow-lists, pin the object (size, ETag) and give it a
        gateway URL. JobError: source_not_allowed, source_forbidden, source_missing, ..."""
        if not settings.allowed_buckets and not settings.allowed_url_hosts:
            raise not_enabled(name)
        remote = parse_remote(name, settings)  # source_not_allowed outside the lists
        from spooler.s3.upstream import S3Upstream, UrlUpstream

        if isinstance(remote, S3Object):
            upstream: S3Upstream | UrlUpstream = S3Upstream(
                self._client(settings), remote, settings.attempts
            )
        else:
            upstream = UrlUpstream(remote, settings.attempts, settings.timeout_seconds)
        return self._gateway_for(settings).open(upstream)

    def fetched(self, source: GatewaySource) -> int:
        """Bytes fetched from the storage for `source` so far."""
        return self._gateway.fetched(source) if self._gateway is not None else 0

    def error(self, source: GatewaySource) -> JobError | None:
        """The first error a read of `source` met (the real cause of an ffmpeg failure)."""
        return self._gateway.error(source) if self._gateway is not None else None

    def clear_error(self, source: GatewaySource) -> None:
        if self._gateway is not None:
            self._gateway.clear_error(source)

    def close(self, source: GatewaySource) -> None:
        if self._gateway is not None:
            self._gateway.close(source)

    def shutdown(self) -> None:
        with self._lock:
            gateway, self._gateway = self._gateway, None
        if gateway is not None:
            gateway.shutdown()

    def _gateway_for(self, settings: S3Settings) -> SourceGateway:
        with self._lock:
            if self._gateway is None:
                from spooler.s3.gateway import SourceGateway

                self._gateway = SourceGateway(settings.chunk_bytes)
            return self._gateway

    def _client(self, settings: S3Settings) -> Any:
        """One boto3 client per endpoint configuration (boto3 clients are thread-safe)."""
        key = (settings.endpoint_url, settings.region, settings.timeout_seconds, settings.attempts)
        with self._lock:
            if key not in self._clients:
                from spooler.s3.client import make_client

                self._clients[key] = make_client(settings)
            return self._clients[key]


class JobRemotes:
    """One job's remote sources: opened through the daemon's RemoteSources under the names
    planning sees (redacted: `names` maps them back to the names in the job), then read,
    counted and closed together."""

    def __init__(
        self, sources: RemoteSources, settings: S3Settings, names: dict[str, str] | None = None
    ) -> None:
        self.sources, self.settings = sources, settings
        self.names = names or {}
        self.opened: dict[str, GatewaySource] = {}

    def open(self, shown: str) -> tuple[RemoteMedia, int]:
        """The gateway URL of the source planning calls `shown`, and its size in bytes."""
        source = self.sources.open(self.names.get(shown, shown), self.settings)
        self.opened[shown] = source
        return RemoteMedia(source.url, shown), source.size

    def fetched(self) -> dict[str, int]:
        """Bytes fetched so far from the storage, per source."""
        return {shown: self.sources.fetched(s) for shown, s in self.opened.items()}

    def error(self) -> JobError | None:
        """The first error a read met, if any (what an ffmpeg failure really was)."""
        for source in self.opened.values():
            error = self.sources.error(source)
            if error is not None:
                return error
        return None

    def clear_errors(self) -> None:
        """Forget what reads met so far: an index read by range may fail and fall back
        to the scan (export/sources.py), which is no error of the job."""
        for source in self.opened.values():
            self.sources.clear_error(source)

    def close(self) -> None:
        for source in self.opened.values():
            self.sources.close(source)
        self.opened.clear()
