"""The CLI's view of a BullMQ queue (`intake: bullmq`): `status`, `ls`, `cancel`, `health`
and `doctor` read Redis instead of the spool. Plain synchronous reads of BullMQ's keys
(docs/fleet.md, "What is in Redis"); the one write is the durable cancel request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from spooler.config import Settings
from spooler.errors import ErrorCode
from spooler.intake.bullmq_rules import QueueKeys

# A cancel request outlives any job: kept a week (the same in web/src/bullmq.ts).
CANCEL_TTL_SECONDS = 7 * 24 * 3600
# Failure codes of a job refused on arrival: the spool calls these "rejected".
REJECTED_CODES = frozenset(
    {
        ErrorCode.INVALID_ID,
        ErrorCode.INVALID_JOB,
        ErrorCode.INVALID_JSON,
        ErrorCode.NOT_UTF8,
        ErrorCode.TOO_LARGE,
        ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
    }
)
LISTS = ("active", "wait", "paused")
ZSETS = ("prioritized", "delayed", "completed", "failed")


@dataclass(frozen=True)
class QueueJob:
    job_id: str
    state: str  # BullMQ's: active, wait, prioritized, delayed, completed, failed, unknown
    data: dict[str, str]

    def _json(self, field: str) -> Any:
        try:
            return json.loads(self.data.get(field, "null"))
        except ValueError:
            return self.data.get(field)

    @property
    def failure(self) -> dict[str, Any] | None:
        reason = self.data.get("failedReason")
        if not reason:
            return None
        parsed = self._json("failedReason")
        if isinstance(parsed, dict) and "code" in parsed:
            return parsed
        return {"code": ErrorCode.INTERNAL.value, "message": reason, "details": {}}

    @property
    def spool_state(self) -> str:
        """The spool's word for it (docs/protocol.md states), for exit codes and humans."""
        if self.state == "completed":
            return "succeeded"
        if self.state == "failed":
            code = (self.failure or {}).get("code")
            if code == ErrorCode.CANCELLED.value:
                return "cancelled"
            return "rejected" if code in REJECTED_CODES else "failed"
        return "running" if self.state == "active" else "queued"

    def to_json(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "state": self.spool_state,
            "queueState": self.state,
            "progress": self._json("progress"),
            "result": self._json("returnvalue"),
            "failure": self.failure,
            "attemptsMade": int(self.data.get("atm") or self.data.get("attemptsMade") or 0),
            "priority": int(self.data.get("priority") or 0),
            "timestamp": int(self.data.get("timestamp") or 0),
        }


class QueueView:
    def __init__(self, settings: Settings) -> None:
        conf = settings.bullmq
        self.keys = QueueKeys(conf.prefix, conf.queue)
        self.redis = redis.Redis.from_url(
            conf.redis_url, socket_timeout=3, socket_connect_timeout=3, decode_responses=True
        )

    def close(self) -> None:
        self.redis.close()

    def job(self, job_id: str) -> QueueJob | None:
        data: dict[str, str] = self.redis.hgetall(self.keys.job(job_id))  # type: ignore[assignment]
        if not data:
            return None
        return QueueJob(job_id, self._state(job_id), data)

    def _state(self, job_id: str) -> str:
        base = self.keys.base
        for name in ZSETS:
            if self.redis.zscore(f"{base}:{name}", job_id) is not None:
                return name
        for name in LISTS:
            if self.redis.lpos(f"{base}:{name}", job_id) is not None:
                return name
        return "unknown"

    def recent(self, limit: int = 50) -> list[QueueJob]:
        """Active and waiting jobs, then the latest finished ones."""
        base = self.keys.base
        ids: list[str] = []
        for name in ("active", "wait"):
            ids += _names(self.redis.lrange(f"{base}:{name}", 0, limit - 1))
        ids += _names(self.redis.zrange(f"{base}:prioritized", 0, limit - 1))
        for name in ("completed", "failed"):
            ids += _names(self.redis.zrevrange(f"{base}:{name}", 0, limit - 1))
        found = [self.job(job_id) for job_id in dict.fromkeys(ids)]
        return [job for job in found if job is not None]

    def counts(self) -> dict[str, int]:
        base = self.keys.base
        out = {name: int(self.redis.llen(f"{base}:{name}")) for name in LISTS}
        out.update({name: int(self.redis.zcard(f"{base}:{name}")) for name in ZSETS})
        return out

    def request_cancel(self, job_id: str) -> None:
        """The durable key every worker reads, and the pub/sub hint (docs/fleet.md)."""
        self.redis.set(self.keys.cancel(job_id), "1", ex=CANCEL_TTL_SECONDS)
        self.redis.publish(self.keys.cancel_channel, job_id)

    def server_facts(self) -> dict[str, Any]:
        """What doctor checks: version, eviction policy, persistence."""
        info: dict[str, Any] = dict(self.redis.info())
        policy = dict(self.redis.config_get("maxmemory-policy"))
        return {
            "version": info.get("redis_version"),
            "maxmemory_policy": policy.get("maxmemory-policy"),
            "aof_enabled": bool(info.get("aof_enabled")),
        }


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
