"""Where derived media lives under the derived-media root (pure: names only, no I/O).

    <root>/objects/<aa>/<digest>/proxy.mp4      content-addressed, immutable once written
    <root>/objects/<aa>/<digest>/waveform.json
    <root>/objects/<aa>/<digest>/poster.jpg
    <root>/manifests/<source path>.json        one per source: the editor looks it up by path
    <root>/keys/<aa>/<key digest>.json         the upload watcher's "submitted once" record

The object digest covers the content key and the proxy settings, so a different file or
different settings never overwrite a published object (on S3: the same keys under a prefix,
served with Cache-Control: immutable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

OBJECTS = "objects"
MANIFESTS = "manifests"
KEYS = "keys"


def key_digest(content_key: str) -> str:
    return hashlib.sha256(content_key.encode()).hexdigest()


def object_digest(content_key: str, settings: str) -> str:
    """Names the derived files of one source content made with one set of settings."""
    return hashlib.sha256(f"{content_key}\n{settings}".encode()).hexdigest()


@dataclass(frozen=True)
class DerivedLayout:
    root: Path

    def object_dir(self, digest: str) -> Path:
        return self.root / OBJECTS / digest[:2] / digest

    def manifest(self, source: str) -> Path:
        """The manifest of a media-root-relative source path (already syntax-checked)."""
        return self.root / MANIFESTS / f"{source}.json"

    def key_record(self, content_key: str) -> Path:
        digest = key_digest(content_key)
        return self.root / KEYS / digest[:2] / f"{digest}.json"

    def relative(self, path: Path) -> str:
        """How manifests name a derived file: relative to the root (a URL path on a CDN)."""
        return path.relative_to(self.root).as_posix()
