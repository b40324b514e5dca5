"""Settings: embedded defaults < YAML file (--config / SPOOLER_CONFIG) < SPOOLER_* environment.

Nested settings use `__` in environment names: SPOOLER_RETENTION__SUCCEEDED_DAYS=3.
Unknown keys are errors so that a typo in a hand-edited file fails loudly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from spooler.errors import ConfigError

# export.watermark_font: "auto" lets spooler.fonts choose; without a font, say how to get one.
FONT_AUTO = "auto"
FONT_INSTALL_HINT = "apt-get install fonts-dejavu-core"


def _default_max_jobs() -> int:
    # ffmpeg already uses every core for one encode; two at once keeps a 4-core box busy
    # while leaving the web app room. One on a 2-core machine.
    return max(1, (os.cpu_count() or 2) // 2)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionSettings(_Section):
    """Days a finished job's folder is kept, by final state (0 = keep forever)."""

    succeeded_days: float = Field(7, ge=0)
    failed_days: float = Field(14, ge=0)
    cancelled_days: float = Field(3, ge=0)
    rejected_days: float = Field(14, ge=0)
    interval_seconds: float = Field(600, gt=0, description="How often retention runs.")


class RetrySettings(_Section):
    max_attempts: int = Field(3, ge=1, le=20)
    backoff_base_seconds: float = Field(5, ge=0)
    backoff_max_seconds: float = Field(300, ge=0)
    jitter: float = Field(0.2, ge=0, le=1, description="Fraction of each delay drawn at random.")


class LimitSettings(_Section):
    max_job_file_bytes: int = Field(1_048_576, ge=1024)
    default_timeout_seconds: float = Field(3600, gt=0)
    max_timeout_seconds: float = Field(6 * 3600, gt=0)
    stall_seconds: float = Field(
        120, gt=0, description="Kill ffmpeg after this long without progress."
    )
    min_priority: int = -10
    max_priority: int = 10
    aging_seconds_per_priority: float = Field(
        60, gt=0, description="Waiting this long raises a job's effective priority by one."
    )
    max_testpattern_seconds: float = Field(600, gt=0)


class ExportSettings(_Section):
    """Bounds on export jobs (multicam edits)."""

    max_angles: int = Field(16, ge=1, le=64)
    max_segments: int = Field(5000, ge=1)
    max_timeline_seconds: float = Field(6 * 3600, gt=0)
    max_outputs: int = Field(8, ge=1)
    smart_workers: int = Field(
        2, ge=1, le=16, description="ffmpeg processes a smart render encodes its cuts with."
    )
    allow_urls: bool = Field(False, description="Reserved: https sources (roadmap phase 2).")
    watermark_font: str = Field(
        FONT_AUTO,
        min_length=1,
        max_length=4096,
        pattern=r"^(auto|/[^\x00-\x1f\x7f]*)$",
        description="Font file of text watermarks: an absolute path, or auto (DejaVuSans.ttf, "
        "else the first .ttf/.otf in the usual font folders).",
    )


class S3Settings(_Section):
    """Remote storage (docs/s3.md). Empty allow-lists: nothing remote is allowed (the default).

    Credentials are never settings: boto3's standard chain (environment, profile, instance
    role, STS) supplies them.
    """

    endpoint_url: str | None = Field(
        None, description="An S3-compatible server (MinIO, a local test server); None: AWS."
    )
    region: str = Field("us-east-1", min_length=1)
    allowed_buckets: list[str] = Field(
        default_factory=list, description="Buckets s3:// sources and destinations may name."
    )
    allowed_url_hosts: list[str] = Field(
        default_factory=list, description="Hosts of https:// (presigned) source URLs."
    )
    http_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts of allowed_url_hosts that may be reached over plain http "
        "(a local S3-compatible server only).",
    )
    chunk_bytes: int = Field(
        4 * 1024 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="Largest signed range request the source gateway makes (each response "
        "starts at 256 KiB and doubles up to it).",
    )
    part_bytes: int = Field(
        8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=5 * 1024 * 1024 * 1024,
        description="Multipart upload part size (S3's minimum is 5 MiB).",
    )
    attempts: int = Field(4, ge=1, le=20, description="Tries per range request or part.")
    timeout_seconds: float = Field(20, gt=0, description="Connect and read timeout per request.")


class BullmqSettings(_Section):
    """The BullMQ intake (docs/fleet.md); used when `intake: bullmq`."""

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis:// or rediss:// URL (password in the URL or SPOOLER_BULLMQ__REDIS_URL).",
    )
    queue: str = Field("exports", min_length=1, description="Queue name the web app adds to.")
    prefix: str = Field("bull", min_length=1, description="BullMQ key prefix (its default).")
    lock_duration_ms: int = Field(
        30000, ge=1000, description="A job's lock; a worker silent this long loses the job."
    )
    stalled_interval_ms: int = Field(30000, ge=500, description="Stalled-job check period.")
    max_stalled_count: int = Field(
        20,
        ge=20,
        description="Stalls before BullMQ fails a job; at least the highest maxAttempts, so "
        "worker deaths within a job's attempts never fail it for good.",
    )
    cancel_poll_seconds: float = Field(
        0.5, gt=0, le=1, description="How often running jobs' cancel keys are read."
    )


class IngestSettings(_Section):
    """Proxies, waveforms, posters and sync (docs/ingest.md). Derived media is written only
    under `derived_root`; the media roots stay read-only."""

    derived_root: Path | None = Field(
        None,
        description="Writable root of proxies, waveforms, posters and manifests; "
        "None: the proxy kind and the upload watcher are off.",
    )
    upload_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders (inside a media root) watched for new uploads: each new source "
        "content gets one proxy job.",
    )
    max_proxy_height: Literal[720, 1080] = Field(1080, description="Largest proxy a job may ask.")
    default_proxy_height: Literal[720, 1080] = 720
    max_gop_frames: int = Field(60, ge=1, le=600, description="Longest keyframe interval.")
    max_source_bytes: int = Field(
        200 * 1024**3, ge=1, description="Uploads larger than this are skipped (logged)."
    )
    max_sync_angles: int = Field(16, ge=2, le=64)
    max_sync_seconds: float = Field(
        4 * 3600, gt=0, description="Longest audio a sync job analyses per angle."
    )
    upload_settle_seconds: float = Field(
        5.0, ge=0, description="An upload unchanged this long (and not open for writing) is done."
    )
    max_upload_files: int = Field(
        10_000, ge=1, description="Entries looked at per upload folder and pass."
    )


# The events a webhook can announce (docs/webhooks.md); `started` is opt-in.
WebhookEventName = Literal["started", "succeeded", "failed", "cancelled", "rejected"]
DEFAULT_WEBHOOK_EVENTS: list[WebhookEventName] = ["succeeded", "failed", "cancelled", "rejected"]


class WebhookSettings(_Section):
    """Outbound job-event callbacks (docs/webhooks.md); off while `url` and `on_finish` are
    unset and no job asks for a `callback`."""

    url: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://",
        description="Daemon-wide endpoint: hears every job's events.",
    )
    events: list[WebhookEventName] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS),
        description="Events sent to `url` (per-job callbacks choose their own).",
    )
    secrets: list[SecretStr] = Field(
        default_factory=list,
        description="whsec_ secrets; every request is signed with each (rotation).",
    )
    secrets_file: Path | None = Field(
        None, description="File with one whsec_ secret a line (added to `secrets`)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts a per-job callback may name: exact names or *.suffix. Also the "
        "only hosts reached over plain http://.",
    )
    allow_private: list[str] = Field(
        default_factory=list,
        description="Host names or networks (CIDR) that may resolve to loopback, private, "
        "link-local or other non-public addresses.",
    )
    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=0,
        max_length=30,
        description="Delay before each retry after the first attempt; then the event is "
        "given up (about 27.6 h with the default).",
    )
    jitter: float = Field(0.2, ge=0, le=1, description="Fraction of each delay drawn at random.")
    max_retry_after_seconds: float = Field(
        86400, ge=0, description="A receiver's Retry-After is honoured up to this."
    )
    connect_timeout_seconds: float = Field(5, gt=0, le=60)
    read_timeout_seconds: float = Field(10, gt=0, le=300)
    max_response_bytes: int = Field(65536, ge=0, le=10_485_760)
    concurrency: int = Field(4, ge=1, le=64, description="Deliveries in flight at once.")
    recover_seconds: float = Field(
        10, gt=0, description="How often final statuses are checked for missing deliveries."
    )
    output_base_url: str | None = Field(
        None,
        max_length=2048,
        description="If set, each output's `uri` in the payload is <this>/<jobId>/<path>.",
    )
    on_finish: list[str] | None = Field(
        None,
        min_length=1,
        description="Command hook: argv (no shell) run after every final state, payload on "
        "stdin; {jobId}, {state}, {event} in arguments are replaced.",
    )
    on_finish_timeout_seconds: float = Field(30, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        # Per-job callbacks without a secret are given up (no_secret) rather than refused
        # here, so an image can ship an allow-list and get its secret from the environment.
        if self.url and not (self.secrets or self.secrets_file):
            raise ValueError("webhooks.url needs webhooks.secrets or webhooks.secrets_file")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPOOLER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    spool_dir: Path = Field(Path("var/spool"), description="Root of the spool tree.")
    media_roots: list[Path] = Field(
        default_factory=lambda: [Path("var/media")],
        description="Job sources must resolve inside one of these.",
    )
    max_jobs: int = Field(default_factory=_default_max_jobs, ge=1, le=64)
    claim_ahead_seconds: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="Alone on the spool, claim one job ahead once every slot's encode is "
        "expected to end within this many seconds, so it starts the moment a slot frees; "
        "0: claim only for a free slot.",
    )
    ffmpeg_path: str | None = Field(None, description="None: PATH, then the imageio-ffmpeg wheel.")
    ffmpeg_threads: int = Field(0, ge=0, le=64, description="0 lets ffmpeg decide.")
    ffmpeg_nice: int = Field(10, ge=0, le=19)
    watch_mode: Literal["auto", "inotify", "polling"] = "auto"
    rescan_seconds: float = Field(2.0, gt=0)
    settle_seconds: float = Field(
        2.0, ge=0, description="Unchanged this long = fully written (where leases are unavailable)."
    )
    inbox_check: Literal["auto", "settle"] = Field(
        "auto",
        description="auto: a Linux read lease tells when a writer closed the file, where the "
        "filesystem supports it; settle: always wait settle_seconds without change.",
    )
    tick_seconds: float = Field(0.1, gt=0, le=1)
    status_interval_seconds: float = Field(0.5, gt=0)
    heartbeat_seconds: float = Field(2.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    max_lease_seconds: float = Field(
        600.0,
        gt=0,
        description="Cap on the lease another daemon announces in its heartbeat: a peer's "
        "jobs are taken over after its own lease, never later than this.",
    )
    kill_grace_seconds: float = Field(
        1.0, gt=0, le=60, description="SIGTERM to SIGKILL; keeps cancel under 2 s."
    )
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    worker_name: str | None = Field(None, description="Default: the host name.")
    metrics_file: Path | None = Field(
        None, description="Prometheus textfile (node_exporter's textfile collector); None: off."
    )
    metrics_interval_seconds: float = Field(15.0, gt=0)
    intake: Literal["spool", "bullmq"] = Field(
        "spool", description="Where jobs come from: the spool's inbox, or a BullMQ queue."
    )
    bullmq: BullmqSettings = BullmqSettings()
    retention: RetentionSettings = RetentionSettings()
    retry: RetrySettings = RetrySettings()
    limits: LimitSettings = LimitSettings()
    export: ExportSettings = ExportSettings()
    s3: S3Settings = S3Settings()
    ingest: IngestSettings = IngestSettings()
    webhooks: WebhookSettings = WebhookSettings()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.lease_seconds < 3 * self.heartbeat_seconds:
            raise ValueError("lease_seconds must be at least 3 x heartbeat_seconds")
        if self.max_lease_seconds < self.lease_seconds:
            raise ValueError("max_lease_seconds must be at least lease_seconds")
        if self.limits.min_priority > self.limits.max_priority:
            raise ValueError("limits.min_priority must not exceed limits.max_priority")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file, which arrives as init kwargs.
        return (env_settings, init_settings)


def load_settings(config_file: Path | None = None) -> Settings:
    """Load settings; a bad file or value raises ConfigError with every problem listed."""
    if config_file is None and os.environ.get("SPOOLER_CONFIG"):
        config_file = Path(os.environ["SPOOLER_CONFIG"])
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping of settings")
        data = loaded or {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


# Settings a running daemon cannot take over on SIGHUP: they shape what it already set up
# (its spool and identity, the watcher, the inbox check, the log sink, the ffmpeg found).
RESTART_ONLY: frozenset[str] = frozenset(
    {
        "spool_dir",
        "worker_name",
        "watch_mode",
        "inbox_check",
        "log_format",
        "ffmpeg_path",
        "intake",
        "bullmq",
        "webhooks",  # its sink holds threads and the loaded secrets
        "ingest",  # the upload watcher holds its folders and watchdog observers
        "s3",  # the output store (local or routed to S3) is built at start, with its client
    }
)


@dataclass(frozen=True)
class ReloadPlan:
    settings: Settings  # what the daemon runs with from now on
    applied: list[str]  # changed settings taken over
    needs_restart: list[str]  # changed settings that wait for a restart


def reload_plan(current: Settings, fresh: Settings) -> ReloadPlan:
    """Pure: which changed settings apply at once (new jobs, the next pass) and which need
    a restart; the result keeps the running values of the latter."""
    changed = [
        name
        for name in type(current).model_fields
        if getattr(current, name) != getattr(fresh, name)
    ]
    keep = {name: getattr(current, name) for name in changed if name in RESTART_ONLY}
    merged = fresh.model_copy(update=keep)
    return ReloadPlan(
        settings=merged,
        applied=[n for n in changed if n not in RESTART_ONLY],
        needs_restart=[n for n in changed if n in RESTART_ONLY],
    )
