"""Standard Webhooks signatures, through the spec's maintained `standardwebhooks` package.

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, one entry per
configured secret separated by spaces, so receivers keep verifying while a secret rotates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from spooler import __version__
from spooler.config import WebhookSettings
from spooler.errors import ConfigError
from spooler.fsutil import FileTooLarge, UnsafeFile, read_untrusted

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format prefix)


def load_secrets(settings: WebhookSettings) -> list[str]:
    """The configured secrets, checked; the file's lines follow the inline ones."""
    found = [s.get_secret_value().strip() for s in settings.secrets]
    if settings.secrets_file is not None:
        found += _read_secrets_file(settings.secrets_file)
        if not found:  # a secret that failed to arrive (LoadCredential, a Docker secret)
            raise ConfigError(f"webhooks.secrets_file {settings.secrets_file} holds no secret")
    for index, secret in enumerate(found):
        if not secret.startswith(SECRET_PREFIX):
            raise ConfigError(f"webhooks secret #{index + 1} must start with {SECRET_PREFIX}")
        try:
            Webhook(secret)
        except Exception as exc:  # not base64, or empty (the library's own error class)
            raise ConfigError(f"webhooks secret #{index + 1} is not valid: {exc}") from exc
    return found


def _read_secrets_file(path: Path) -> list[str]:
    try:
        raw = read_untrusted(path, 65536)
    except (OSError, UnsafeFile, FileTooLarge) as exc:
        raise ConfigError(f"cannot read webhooks.secrets_file {path}: {exc}") from exc
    return [line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]


def signature(secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


def signed_headers(
    secrets: list[str], msg_id: str, body: str, now: datetime | None = None
) -> dict[str, str]:
    """The request headers of one attempt (a new timestamp, the same id, every retry)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature(secrets, msg_id, moment, body),
        "content-type": "application/json",
        "user-agent": f"spooler/{__version__}",
    }


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def seal(secret: str, content: bytes) -> str:
    """MAC of an outbox record, with a key derived from the secret (never the signing key
    itself): whoever can write into the spool cannot get a body of theirs signed and sent."""
    key = hmac.new(_key(secret), b"spooler-outbox-record-v1", hashlib.sha256).digest()
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def sealed_by_any(secrets: list[str], content: bytes, mac: str | None) -> bool:
    if mac is None:
        return False
    return any(hmac.compare_digest(seal(secret, content), mac) for secret in secrets)
