"""`proxy`: one source -> proxy, waveform and poster in the derived-media root, and the
source's manifest (the shell; decisions in proxyplan.py, checks in proxyverify.py).

Derived files are written under hidden temporary names beside their final names, verified,
then renamed; the manifest is renamed into place last, so an editor that finds a manifest
finds every file it names. They are not job outputs (retention never touches them); the
job publishes a copy of the manifest as its one output, so the status names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export.encoders import encoder_threads
from spooler.export.sources import open_source
from spooler.fsutil import (
    TEMP_PREFIX,
    atomic_write_bytes,
    fsync_dir,
    fsync_file,
    remove_entry,
    temp_name_for,
)
from spooler.ingest import proxyplan
from spooler.ingest.contentkey import content_key
from spooler.ingest.derived import DerivedLayout, object_digest
from spooler.ingest.models import ManifestWaveform, ProxyJob, ProxyManifest
from spooler.ingest.proxyverify import read_timecode, verify_proxy
from spooler.ingest.waveform import peaks
from spooler.jobkind import JobContext, JobSpec, Step
from spooler.media import probe, scan_video
from spooler.status import OutputInfo

MANIFEST_OUTPUT = "manifest.json"
STALE_SECONDS = 3600.0


def derived_layout(settings: Settings) -> DerivedLayout:
    if settings.ingest.derived_root is None:
        raise JobError(ErrorCode.INVALID_JOB, "ingest.derived_root is not configured")
    return DerivedLayout(settings.ingest.derived_root)


def remove_stale_temps(folder: Path, now: float) -> None:
    """Leftovers of an attempt that died (kill -9, a crash) in an object folder: hidden
    temporary names untouched for STALE_SECONDS (a live writer keeps its file's mtime fresh)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                        remove_entry(Path(entry.path))


class ProxyKind:
    name: ClassVar[str] = "proxy"
    spec_model: ClassVar[type[JobSpec]] = ProxyJob

    def limit_errors(self, spec: ProxyJob, settings: Settings) -> list[dict[str, Any]]:
        out = []
        if settings.ingest.derived_root is None:
            message = "this daemon has no ingest.derived_root: proxies are off"
            out.append({"path": "kind", "code": "limit", "message": message})
        if spec.height is not None and spec.height > settings.ingest.max_proxy_height:
            message = f"{spec.height} is over the limit of {settings.ingest.max_proxy_height}"
            out.append({"path": "height", "code": "limit", "message": message})
        if spec.gop_frames is not None and spec.gop_frames > settings.ingest.max_gop_frames:
            message = f"{spec.gop_frames} is over the limit of {settings.ingest.max_gop_frames}"
            out.append({"path": "gopFrames", "code": "limit", "message": message})
        return out

    def run(self, spec: ProxyJob, ctx: JobContext) -> None:
        derived = derived_layout(ctx.settings)
        steps = [Step("proxy", 0.9)] + ([Step("poster", 0.1)] if spec.poster else [])
        ctx.declare_steps(steps)
        ctx.declare_outputs([MANIFEST_OUTPUT])
        real, fd = open_source(spec.source, ctx.settings.media_roots)
        try:
            self._run(spec, ctx, derived, real, fd)
        finally:
            os.close(fd)

    def _run(
        self, spec: ProxyJob, ctx: JobContext, derived: DerivedLayout, real: Path, fd: int
    ) -> None:
        read = Path(f"/proc/self/fd/{fd}")
        key = content_key(fd)
        info = probe(read, decode=True, name=spec.source)
        if not info.has_video:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{spec.source!r} has no video stream",
                {"source": spec.source},
            )  # fmt: skip
        index = scan_video(read, name=spec.source)
        if not index.packets:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{spec.source!r} has no video packets",
                {"source": spec.source},
            )  # fmt: skip
        timecode = read_timecode(read)
        pcm = ctx.temp_path("waveform.pcm") if spec.waveform and info.has_audio else None
        # The object folder's name needs the plan, the plan needs the output name: plan
        # once with a placeholder to learn the settings, then for real.
        draft = proxyplan.plan_proxy(
            spec, info, index, ctx.settings.ingest, source=str(read), output="-",
            pcm=None, timecode=timecode, threads=[],
        )  # fmt: skip
        folder = derived.object_dir(object_digest(key, draft.settings_key()))
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder, time.time())
        final_proxy = folder / "proxy.mp4"
        tmp_proxy = temp_name_for(final_proxy)
        made: list[Path] = [tmp_proxy]
        try:
            plan = proxyplan.plan_proxy(
                spec, info, index, ctx.settings.ingest, source=str(read),
                output=str(tmp_proxy), pcm=str(pcm) if pcm else None, timecode=timecode,
                threads=encoder_threads(ctx.settings.ffmpeg_threads),
            )  # fmt: skip
            ctx.set_preflight({"source": spec.source, "contentKey": key, **plan.preflight()})
            ctx.run_ffmpeg(
                plan.args, step="proxy", expected_seconds=plan.rate.duration, pass_fds=(fd,)
            )
            duration = verify_proxy(tmp_proxy, plan, timecode, f"proxy of {spec.source}")
            waveform = None
            if pcm is not None and spec.waveform is not None:
                samples = np.fromfile(pcm, dtype="<i2")
                data = peaks(
                    samples, sample_rate=proxyplan.PCM_RATE,
                    pixels_per_second=spec.waveform.pixels_per_second, bits=spec.waveform.bits,
                )  # fmt: skip
                final_wave = folder / "waveform.json"
                atomic_write_bytes(final_wave, json.dumps(data, separators=(",", ":")).encode())
                waveform = ManifestWaveform(
                    path=derived.relative(final_wave), bits=data["bits"],
                    sample_rate=data["sample_rate"], samples_per_pixel=data["samples_per_pixel"],
                    length=data["length"],
                )  # fmt: skip
            poster = None
            if spec.poster:
                final_poster = folder / "poster.jpg"
                tmp_poster = temp_name_for(final_poster)
                made.append(tmp_poster)
                at = proxyplan.poster_time(duration)
                ctx.run_ffmpeg(
                    proxyplan.poster_args(str(tmp_proxy), at, str(tmp_poster)),
                    step="poster", expected_seconds=0.1,
                )  # fmt: skip
                if not tmp_poster.is_file() or tmp_poster.stat().st_size == 0:
                    raise JobError(ErrorCode.VERIFY_FAILED, "the poster was not written")
                fsync_file(tmp_poster)
                tmp_poster.replace(final_poster)
                poster = derived.relative(final_poster)
            fsync_file(tmp_proxy)
            tmp_proxy.replace(final_proxy)
            fsync_dir(folder)
        finally:
            for path in made:
                with contextlib.suppress(OSError):
                    path.unlink()
            if pcm is not None:
                with contextlib.suppress(OSError):
                    pcm.unlink()
        display = info.display_size or (0, 0)
        manifest = ProxyManifest(
            source=spec.source, content_key=key, source_size_bytes=os.fstat(fd).st_size,
            proxy=derived.relative(final_proxy), proxy_size_bytes=final_proxy.stat().st_size,
            duration_seconds=round(duration, 6), frame_count=plan.rate.frames,
            frame_rate=f"{plan.rate.rate.numerator}/{plan.rate.rate.denominator}",
            frame_rate_float=round(float(plan.rate.rate), 6),
            constant_rate_source=plan.rate.constant, width=plan.size[0], height=plan.size[1],
            source_width=display[0], source_height=display[1], gop_frames=plan.gop,
            has_audio=bool(plan.audio_channels), audio_channels=plan.audio_channels,
            timecode=timecode, waveform=waveform, poster=poster, job_id=ctx.job_id,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )  # fmt: skip
        body = json.dumps(manifest.model_dump(by_alias=True), indent=2).encode() + b"\n"
        # Beside the proxy too: an export naming the proxy finds its original from there.
        atomic_write_bytes(folder / "manifest.json", body)
        target = derived.manifest(spec.source)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, body)  # the publish point of the derived files
        copy = ctx.temp_path(MANIFEST_OUTPUT)
        copy.write_bytes(body)
        ctx.publish(
            copy, MANIFEST_OUTPUT,
            OutputInfo(path=MANIFEST_OUTPUT, role="manifest", size_bytes=len(body),
                       mime_type="application/json"),
        )  # fmt: skip
