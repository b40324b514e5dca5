"""Export from proxies: map each source marked `sourceKind: "proxy"` back to its original
through the manifest beside the proxy (the shell: reads manifests, checks originals).

The export then runs on the originals as if the job had named them; the preflight lists
every mapping (`fromProxies`). A missing original is `source_missing` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export.models import Angle, ExportJob, ExternalAudio
from spooler.export.sources import resolve_source
from spooler.fsutil import FileTooLarge, UnsafeFile, read_untrusted
from spooler.ingest.models import ProxyManifest

MAX_MANIFEST_BYTES = 256 * 1024
PROXY_NAME = "proxy.mp4"


def object_manifest(proxy: Path) -> Path:
    return proxy.parent / "manifest.json"


def _original_of(proxy: str, settings: Settings) -> tuple[str, str]:
    """(original path, content key) of a proxy named relative to the derived root."""
    root = settings.ingest.derived_root
    if root is None:
        raise JobError(
            ErrorCode.SOURCE_NOT_ALLOWED,
            f"{proxy!r} is marked as a proxy but this daemon has no ingest.derived_root",
            {"source": proxy},
        )
    real_root = root.resolve()
    path = (real_root / proxy).resolve()
    if not path.is_relative_to(real_root) or path.name != PROXY_NAME:
        raise JobError(
            ErrorCode.SOURCE_NOT_ALLOWED,
            f"{proxy!r} is not a proxy under the derived-media root",
            {"source": proxy},
        )
    try:
        raw = read_untrusted(object_manifest(path), MAX_MANIFEST_BYTES)
        manifest = ProxyManifest.model_validate_json(raw)
    except FileNotFoundError as exc:
        raise JobError(
            ErrorCode.SOURCE_MISSING, f"proxy {proxy!r} has no manifest", {"source": proxy}
        ) from exc
    except (OSError, UnsafeFile, FileTooLarge, ValidationError) as exc:
        raise JobError(
            ErrorCode.SOURCE_UNREADABLE,
            f"the manifest of proxy {proxy!r} cannot be read ({type(exc).__name__})",
            {"source": proxy},
        ) from exc
    return manifest.source, manifest.content_key


def from_proxies(job: ExportJob, settings: Settings) -> tuple[ExportJob, list[dict[str, Any]]]:
    """The job with every proxy source replaced by its original, and the mappings."""
    report: list[dict[str, Any]] = []

    def original(item: Angle | ExternalAudio, who: str) -> str:
        found, key = _original_of(item.source, settings)
        try:
            resolve_source(found, settings.media_roots)
        except JobError as exc:
            if exc.code == ErrorCode.SOURCE_MISSING:
                raise JobError(
                    ErrorCode.SOURCE_MISSING,
                    f"{found!r}, the original of proxy {item.source!r} ({who}), was not "
                    "found in any media root",
                    {"source": found, "proxy": item.source},
                ) from exc
            raise
        report.append({"for": who, "proxy": item.source, "original": found, "contentKey": key})
        return found

    angles = [
        a.model_copy(update={"source": original(a, a.id), "source_kind": "original"})
        if a.source_kind == "proxy" else a
        for a in job.angles
    ]  # fmt: skip
    update: dict[str, Any] = {"angles": angles}
    audio = job.audio
    if isinstance(audio, ExternalAudio) and audio.source_kind == "proxy":
        mapped = original(audio, "audio")
        update["audio"] = audio.model_copy(update={"source": mapped, "source_kind": "original"})
    if not report:
        return job, []
    return job.model_copy(update=update), report
