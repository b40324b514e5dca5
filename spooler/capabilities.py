"""What this daemon accepts, announced in its heartbeat: the protocol version and the job
features (kinds and optional fields) it understands. A client (and the web module) reads the
heartbeats of the daemons on a spool before it sends a field an older daemon would reject:
every daemon there must list the feature. docs/protocol.md §13 lists the names.
"""

from __future__ import annotations

from typing import Any

from spooler.layout import PROTOCOL_VERSION

# Optional job fields and behaviours a client may depend on, by the name it checks. Add a
# name when a daemon starts to accept something an older one refuses; never remove one.
FEATURES: tuple[str, ...] = (
    "export.modes.smart",
    "export.transitions",
    "export.watermark.image",
    "export.watermark.text",
    "export.audio.ambient",
    "export.audio.loudness",
    "export.renditions",
    "export.poster",
    "export.storyboard",
    "limits.checked_at_claim",
    "status.cancelRequested",
    "status.jobsAhead",
    "callback",  # per-job webhooks (docs/webhooks.md)
)


def capabilities() -> dict[str, Any]:
    from spooler.kinds import KINDS  # the registry imports every kind: only when asked

    return {
        "protocolVersion": PROTOCOL_VERSION,
        "kinds": sorted(KINDS),
        "features": list(FEATURES),
    }
