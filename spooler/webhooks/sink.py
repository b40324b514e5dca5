"""WebhookSink: the report seam's sink for webhooks and the command hook.

    status_written(previous, current)   after every durable status write; never blocks
    before_remove(job_id)               before delete/retention removes a job folder
    recover()                           rebuild missing outbox records from status files
    start() / stop()                    the ingest thread and the delivery threads

Order of durability (docs/webhooks.md): the fsynced status write records the event (its
history entry); the ingest thread then writes the outbox record; only then is it attempted.
A record lost in between (kill -9 before it was written, or a power cut before the page
cache reached the disk: it is not fsynced while the status file holds the event) is rebuilt
by `recover()` (at start and every `recover_seconds`), which derives the same events, with
the same webhook ids, from the status files. `before_remove` fsyncs the job's records
before its status file goes. Delivery is at least once: receivers deduplicate on
`webhook-id`.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import os
import queue
import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from spooler.config import Settings
from spooler.errors import ConfigError
from spooler.fsutil import FileTooLarge, UnsafeFile, atomic_write_json, read_untrusted
from spooler.jobkind import Callback
from spooler.layout import SpoolLayout, is_valid_job_id
from spooler.spool import job_ids, read_status
from spooler.status import JobStatus, iso, utcnow
from spooler.webhooks.events import (
    EVENT_OF_STATE,
    Event,
    event_id,
    events_in,
    new_events,
    payload_for,
    render_body,
)
from spooler.webhooks.outbox import AttemptState, Outbox, OutboxRecord, Outcome
from spooler.webhooks.policy import (
    PERMANENT,
    DeliveryError,
    classify_status,
    parse_endpoint,
    parse_retry_after,
    retry_delay,
)
from spooler.webhooks.signing import load_secrets, seal, sealed_by_any, signed_headers
from spooler.webhooks.transport import (
    HttpLimits,
    Resolver,
    TransportError,
    post,
    run_command,
    system_resolver,
)

CAPABILITY = "callback"


class WebhookSink:
    CAPABILITY = CAPABILITY

    def __init__(
        self,
        settings: Settings,
        layout: SpoolLayout,
        *,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.cfg = settings.webhooks
        self.layout = layout
        self.outbox = Outbox(layout)
        try:
            self.secrets = load_secrets(self.cfg)
            self.config_error: ConfigError | None = None
        except ConfigError as exc:  # raised by start(): the daemon refuses to start
            self.secrets = []
            self.config_error = exc
        self.resolver = resolver
        self.clock = clock
        self.rand = rand
        self.limits = HttpLimits(
            connect_timeout=self.cfg.connect_timeout_seconds,
            read_timeout=self.cfg.read_timeout_seconds,
            max_response_bytes=self.cfg.max_response_bytes,
            allow_private=list(self.cfg.allow_private),
        )
        self.log = structlog.get_logger().bind(component="webhooks")
        self.stats: Counter[str] = Counter()
        self._incoming: queue.Queue[tuple[JobStatus | None, JobStatus]] = queue.Queue()
        self._heap: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()
        self._cv = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: dict[str, tuple[int, int]] = {}  # job id -> status (mtime_ns, size)
        self._since: datetime | None = None
        self._record_lock = threading.Lock()

    # -- the seam ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Anything to do at all: a daemon-wide URL, a command, or per-job callbacks allowed."""
        return bool(self.cfg.url or self.cfg.on_finish or self.cfg.allowed_hosts)

    def status_written(self, previous: JobStatus | None, current: JobStatus) -> None:
        """After the durable write of `current`: hand it to the ingest thread (no I/O here)."""
        if self.active:
            self._incoming.put((previous, current))

    def before_remove(self, job_id: str) -> None:
        """Before a job folder is deleted: make sure its events are in the outbox."""
        if not self.active:
            return
        try:
            status = read_status(self.layout, job_id)
        except (OSError, ValueError):
            return
        if status is not None:
            self._record(status, self._recent(events_in(status)), durable=True)

    def recover(self) -> int:
        """Outbox records for events found in status files but missing from the outbox."""
        created = 0
        present = job_ids(self.layout)
        for gone in set(self._seen) - set(present):
            del self._seen[gone]
        for job_id in present:
            path = self.layout.status_file(job_id)
            try:
                info = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            key = (info.st_mtime_ns, info.st_size)
            if self._seen.get(job_id) == key:
                continue
            try:
                status = read_status(self.layout, job_id)
            except (OSError, ValueError):
                continue
            if status is None:
                continue
            created += self._record(status, self._recent(events_in(status)))
            self._seen[job_id] = key
        if created:
            # Missed while no daemon with webhooks ran, or lost in a crash.
            self.log.warning("webhook_events_recovered", count=created)
        self.stats["recovered"] += created
        return created

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if not self.active:
            return
        if self.config_error is not None:
            raise self.config_error
        self.outbox.ensure()
        self._since = self._load_since()
        for name in self.outbox.pending_names():
            self._schedule(name, 0.0)
        ingest = threading.Thread(target=self._ingest_loop, name="webhook-ingest", daemon=True)
        self._threads = [ingest] + [
            threading.Thread(target=self._deliver_loop, name=f"webhook-{i}", daemon=True)
            for i in range(self.cfg.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        self.log.info(
            "webhooks_started",
            url=self.cfg.url,
            per_job_hosts=self.cfg.allowed_hosts,
            command=bool(self.cfg.on_finish),
            secrets=len(self.secrets),
            pending=len(self._scheduled),
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; whatever is pending stays in the outbox for the next start."""
        self._stopping.set()
        with self._cv:
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    # -- ingest: statuses -> outbox records ------------------------------------------------
    def _ingest_loop(self) -> None:
        next_recovery = 0.0
        while not self._stopping.is_set():
            now = self.clock().timestamp()
            if now >= next_recovery:
                self._guard(self._maintain)
                next_recovery = now + self.cfg.recover_seconds
            try:
                previous, current = self._incoming.get(timeout=min(1.0, self.cfg.recover_seconds))
            except queue.Empty:
                continue
            # _recent: a write that re-announces an old history (previous unknown) must not
            # revive events whose outcome was pruned long ago.
            events = self._recent(new_events(previous, current))
            self._guard(lambda s=current, e=events: self._record(s, e))  # type: ignore[misc]

    def _maintain(self) -> None:
        self.recover()
        for name in self.outbox.pending_names():  # records written by before_remove or others
            if name not in self._scheduled:
                self._schedule(name, 0.0)
        horizon = self._horizon().total_seconds()
        self.outbox.prune(self.clock().timestamp() - 2 * horizon - 86400)

    def _guard(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # a full disk must not kill the thread; the next turn retries
            self.log.exception("webhook_step_failed")

    def _horizon(self) -> timedelta:
        # Events older than the whole retry schedule would expire at once: not rebuilt.
        schedule = sum(self.cfg.retry_schedule_seconds) * (1 + self.cfg.jitter)
        return timedelta(seconds=schedule + 3600)

    def _recent(self, events: list[Event]) -> list[Event]:
        oldest = self.clock() - self._horizon()
        if self._since is not None:
            oldest = max(oldest, self._since)
        return [e for e in events if e.entry.at >= oldest]

    def _load_since(self) -> datetime:
        """When webhooks were first enabled on this spool: older jobs are never announced."""
        path = self.outbox.root / "since.json"
        try:
            raw = read_untrusted(path, 4096, in_real_dir=True)
            return datetime.fromisoformat(json.loads(raw)["since"])
        except (OSError, ValueError, KeyError, TypeError, UnsafeFile, FileTooLarge):
            now = self.clock()
            atomic_write_json(path, {"since": iso(now)})
            return now

    def _record(self, status: JobStatus, events: list[Event], *, durable: bool = False) -> int:
        if not events:
            return 0
        callback = self._callback_of(status.job_id)
        created = 0
        with self._record_lock:  # before_remove may run on the daemon's thread
            self.outbox.ensure()
            for record in self._records_for(status, events, callback):
                if self.outbox.add(record, durable=durable):
                    created += 1
                    self.stats["recorded"] += 1
                    self._schedule(record.name, 0.0)
        return created

    def _records_for(
        self, status: JobStatus, events: list[Event], callback: Callback | None
    ) -> list[OutboxRecord]:
        records: list[OutboxRecord] = []
        now = self.clock()
        for event in events:
            body = render_body(payload_for(status, event, self.cfg.output_base_url))
            common: dict[str, Any] = {
                "id": event_id(status, event.sequence),
                "job_id": status.job_id,
                "event": event.name,
                "sequence": event.sequence,
                "event_at": event.entry.at,
                "created_at": now,
                "body": body,
            }
            if self.cfg.url and event.name in self.cfg.events:
                records.append(OutboxRecord(target="operator", url=self.cfg.url, **common))
            if callback is not None and event.name in callback.events:
                records.append(OutboxRecord(target="job", url=callback.url, **common))
            if self.cfg.on_finish and event.is_final:
                argv = hook_argv(self.cfg.on_finish, status.job_id, event.name)
                records.append(OutboxRecord(target="command", command=argv, **common))
        if self.secrets:
            records = [
                r.model_copy(update={"mac": seal(self.secrets[0], r.sealed_content())})
                for r in records
            ]
        return records

    def _callback_of(self, job_id: str) -> Callback | None:
        """The job's own `callback`, if its job file can be read and holds a valid one (an
        empty allow-list does not hide it: its record is then given up as not_allowed)."""
        try:
            raw = read_untrusted(
                self.layout.job_file(job_id),
                self.settings.limits.max_job_file_bytes,
                in_real_dir=True,  # a job folder replaced by a link out of the spool
            )
            data = json.loads(raw)
        except (OSError, ValueError, UnsafeFile, FileTooLarge, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("callback") is None:
            return None
        try:
            return Callback.model_validate(data["callback"])
        except ValidationError:
            return None

    # -- delivery ---------------------------------------------------------------------------
    def _schedule(self, name: str, when: float) -> None:
        with self._cv:
            if name in self._scheduled:
                return
            self._scheduled.add(name)
            heapq.heappush(self._heap, (when, name))
            self._cv.notify()

    def _next_due(self) -> str | None:
        with self._cv:
            while not self._stopping.is_set():
                now = self.clock().timestamp()
                if self._heap and self._heap[0][0] <= now:
                    _, name = heapq.heappop(self._heap)
                    self._scheduled.discard(name)
                    return name
                wait = min(1.0, self._heap[0][0] - now) if self._heap else 1.0
                self._cv.wait(wait)
        return None

    def _deliver_loop(self) -> None:
        while True:
            name = self._next_due()
            if name is None:
                return
            self._guard(lambda n=name: self._attempt(n))  # type: ignore[misc]

    def _attempt(self, name: str) -> None:
        try:
            fd = os.open(self.outbox.record_path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return  # delivered meanwhile (by another daemon)
        except OSError as exc:  # a link planted in outbox/: never followed
            self.log.error("webhook_record_unsafe", record=name, error=str(exc))
            self.outbox.quarantine(name)
            return
        try:
            try:
                # Another daemon on this spool attempting the same record: let it.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._schedule(name, self.clock().timestamp() + 1.0)
                return
            if self.outbox.finished(name):
                self.outbox.drop_pending(name)
                return
            record = self.outbox.read_record(name)
            if record is None or record.name != name:
                # Unreadable, or planted: its content would name another file to finish.
                self.log.error("webhook_record_unreadable", record=name)
                self.outbox.quarantine(name)
                return
            state = self.outbox.read_state(name)
            now = self.clock()
            if state.next_attempt_at is not None and state.next_attempt_at > now:
                self._schedule(name, state.next_attempt_at.timestamp())
                return
            self._attempt_record(record, state, now)
        finally:
            os.close(fd)

    def _attempt_record(self, record: OutboxRecord, state: AttemptState, now: datetime) -> None:
        attempt: tuple[DeliveryError | None, str, int | None, float | None]
        if self.secrets and not sealed_by_any(self.secrets, record.sealed_content(), record.mac):
            # Planted in the spool, or sealed with a secret no longer configured.
            attempt = (DeliveryError.UNAUTHENTIC, "not sealed by a configured secret", None, None)
        else:
            attempt = self._send(record, now)
        error, message, http_status, retry_after = attempt
        state = state.model_copy(
            update={
                "attempts": state.attempts + 1,
                "last_attempt_at": now,
                "last_error": f"{error}: {message}" if error else None,
                "last_status": http_status,
                "next_attempt_at": None,
            }
        )
        fields = {
            "webhook_id": record.id,
            "job_id": record.job_id,
            "webhook_event": record.event,
            "target": record.target,
            "attempt": state.attempts,
            "http_status": http_status,
        }
        self.stats["attempts"] += 1
        if error is None:
            self.outbox.finish(
                Outcome(outcome="delivered", at=self.clock(), record=record, state=state)
            )
            self.stats["delivered"] += 1
            latency = (self.clock() - record.event_at).total_seconds()
            self.log.info("webhook_delivered", latency_seconds=round(latency, 4), **fields)
            return
        delay = (
            None
            if error in PERMANENT
            else retry_delay(
                state.attempts,
                self.cfg.retry_schedule_seconds,
                jitter=self.cfg.jitter,
                rand=self.rand(),
                retry_after=retry_after,
                max_retry_after=self.cfg.max_retry_after_seconds,
            )
        )
        if delay is None:
            if error not in PERMANENT:
                state = state.model_copy(
                    update={
                        "last_error": f"{DeliveryError.EXPIRED}: retries exhausted; "
                        f"last: {state.last_error}"
                    }
                )
            self.outbox.finish(
                Outcome(outcome="failed", at=self.clock(), record=record, state=state)
            )
            self.stats["failed"] += 1
            self.log.error("webhook_given_up", error=state.last_error, **fields)
            return
        due = self.clock() + timedelta(seconds=delay)
        self.outbox.write_state(record.name, state.model_copy(update={"next_attempt_at": due}))
        self.stats["retries"] += 1
        self.log.warning(
            "webhook_attempt_failed", error=state.last_error, retry_in=round(delay, 3), **fields
        )
        self._schedule(record.name, due.timestamp())

    def _send(
        self, record: OutboxRecord, now: datetime
    ) -> tuple[DeliveryError | None, str, int | None, float | None]:
        """(error, message, HTTP status, Retry-After seconds) of one attempt."""
        if record.target == "command":
            # The argv comes from the settings, never from the spool.
            if not self.cfg.on_finish:
                return DeliveryError.NOT_ALLOWED, "webhooks.on_finish is no longer set", None, None
            if not is_valid_job_id(record.job_id) or record.event not in EVENT_NAMES:
                return DeliveryError.UNAUTHENTIC, "bad job id or event in the record", None, None
            result = run_command(
                hook_argv(self.cfg.on_finish, record.job_id, record.event),
                record.body.encode(),
                timeout=self.cfg.on_finish_timeout_seconds,
            )
            self.log.info(
                "webhook_command_ran",
                webhook_id=record.id,
                job_id=record.job_id,
                returncode=result.returncode,
                seconds=round(result.elapsed, 3),
            )
            if result.returncode == 0:
                return None, "", None, None
            what = "timed out" if result.returncode is None else f"exit {result.returncode}"
            return DeliveryError.COMMAND_FAILED, f"{what}: {result.output_tail[-300:]}", None, None
        url = record.url if record.target == "job" else self.cfg.url
        if not url:
            return DeliveryError.NOT_ALLOWED, "webhooks.url is no longer set", None, None
        return send_http(
            url,
            record.id,
            record.body,
            per_job=record.target == "job",
            secrets=self.secrets,
            allowed_hosts=list(self.cfg.allowed_hosts),
            resolver=self.resolver,
            limits=self.limits,
            now=now,
        )[:4]


EVENT_NAMES = frozenset(EVENT_OF_STATE.values())


def hook_argv(template: list[str], job_id: str, event: str) -> list[str]:
    """The command hook's argv: placeholders replaced by plain substitution (no format
    strings, no shell); the job id is a validated name and the event a fixed word."""
    state = "running" if event == "started" else event
    return [
        arg.replace("{jobId}", job_id).replace("{state}", state).replace("{event}", event)
        for arg in template
    ]


def send_http(
    url: str,
    msg_id: str,
    body: str,
    *,
    per_job: bool,
    secrets: list[str],
    allowed_hosts: list[str],
    resolver: Resolver,
    limits: HttpLimits,
    now: datetime | None = None,
) -> tuple[DeliveryError | None, str, int | None, float | None, bytes]:
    """One signed POST: (error, message, HTTP status, Retry-After, response body)."""
    now = now or datetime.now(UTC)
    if not secrets:
        return DeliveryError.NO_SECRET, "no webhooks secret configured", None, None, b""
    endpoint = parse_endpoint(url, per_job=per_job, allowed_hosts=allowed_hosts)
    if isinstance(endpoint, str):
        code, _, message = endpoint.partition(": ")
        return DeliveryError(code), message, None, None, b""
    try:
        answer = post(
            endpoint,
            body.encode(),
            signed_headers(secrets, msg_id, body, now),
            resolver=resolver,
            limits=limits,
        )
    except TransportError as exc:
        return exc.code, exc.message, None, None, b""
    error = classify_status(answer.status)
    retry_after = parse_retry_after(answer.headers.get("retry-after"), now)
    message = ""
    if error is DeliveryError.REDIRECT:
        message = f"HTTP {answer.status} to {answer.headers.get('location', '?')!r} not followed"
    elif error is not None:
        message = f"HTTP {answer.status}"
    return error, message, answer.status, retry_after, answer.body
