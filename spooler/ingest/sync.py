"""`sync`: each angle's syncOffset from its sound (the shell; the maths is syncmath.py).

One ffmpeg pass decodes every input's first audio stream to mono float PCM at ANALYSIS_RATE
(one output per input, read back with numpy); the result is `sync.json`, a job output.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export.sources import open_source
from spooler.ingest import syncmath
from spooler.ingest.models import SyncDrift, SyncInput, SyncJob, SyncPlacement, SyncResult
from spooler.jobkind import JobContext, JobSpec, Step
from spooler.media import probe
from spooler.status import OutputInfo

# 16 kHz: a sixteenth of a millisecond per sample (a frame is 33 ms), and a 4-hour
# recording still fits in memory (0.9 GB as float32).
ANALYSIS_RATE = 16_000
RESULT = "sync.json"


def decode_args(
    inputs: list[tuple[str, bool]], outputs: list[str], max_seconds: float
) -> list[str]:
    """One pass: input i (with audio) -> outputs[i] as raw mono float32 at ANALYSIS_RATE."""
    args: list[str] = []
    for source, _ in inputs:
        args += ["-t", f"{max_seconds:g}", "-i", source]
    for i, ((_, has_audio), out) in enumerate(zip(inputs, outputs, strict=True)):
        if has_audio:
            args += ["-map", f"{i}:a:0", "-ac", "1", "-ar", str(ANALYSIS_RATE),
                     "-c:a", "pcm_f32le", "-f", "f32le", out]  # fmt: skip
    return args


def _samples(path: Path | None) -> Any:
    """The decoded track, mapped rather than read: pages come in as the analysis reads."""
    if path is None or not path.exists() or path.stat().st_size < 4:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(path, dtype="<f4", mode="r")


class SyncKind:
    name: ClassVar[str] = "sync"
    spec_model: ClassVar[type[JobSpec]] = SyncJob

    def limit_errors(self, spec: SyncJob, settings: Settings) -> list[dict[str, Any]]:
        count, limit = len(spec.inputs()), settings.ingest.max_sync_angles
        if count <= limit:
            return []
        message = f"{count} inputs is over the limit of {limit}"
        return [{"path": "angles", "code": "limit", "message": message}]

    def run(self, spec: SyncJob, ctx: JobContext) -> None:
        ctx.declare_steps([Step("decode", 0.7), Step("analyse", 0.3)])
        ctx.declare_outputs([RESULT])
        inputs = spec.inputs()
        fds: list[int] = []
        pcms = [ctx.temp_path(f"sync-{i}.f32") for i in range(len(inputs))]
        try:
            described = []
            for item in inputs:
                _, fd = open_source(item.source, ctx.settings.media_roots)
                fds.append(fd)
                info = probe(Path(f"/proc/self/fd/{fd}"), name=item.source)
                described.append((f"/proc/self/fd/{fd}", info.has_audio, info.duration))
            longest = min(max(d for _, _, d in described), ctx.settings.ingest.max_sync_seconds)
            ctx.set_preflight(
                {"reference": spec.reference_id, "analysisRate": ANALYSIS_RATE,
                 "inputs": [{"id": i.id, "source": i.source, "hasAudio": a, "duration": d}
                            for i, (_, a, d) in zip(inputs, described, strict=True)]}
            )  # fmt: skip
            if any(a for _, a, _ in described):
                ctx.run_ffmpeg(
                    decode_args([(s, a) for s, a, _ in described], [str(p) for p in pcms],
                                ctx.settings.ingest.max_sync_seconds),
                    step="decode", expected_seconds=longest, pass_fds=tuple(fds),
                )  # fmt: skip
            tracks = [_samples(p) if a else _samples(None)
                      for p, (_, a, _) in zip(pcms, described, strict=True)]  # fmt: skip
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        try:
            result = self._analyse(spec, inputs, tracks, ctx)
        finally:
            for p in pcms:
                with contextlib.suppress(OSError):
                    p.unlink()
        body = json.dumps(result.model_dump(by_alias=True), indent=2).encode() + b"\n"
        tmp = ctx.temp_path(RESULT)
        tmp.write_bytes(body)
        ctx.publish(
            tmp, RESULT,
            OutputInfo(path=RESULT, role="sync", size_bytes=len(body),
                       mime_type="application/json"),
        )  # fmt: skip

    def _analyse(
        self, spec: SyncJob, inputs: list[SyncInput], tracks: list[Any], ctx: JobContext
    ) -> SyncResult:
        ref = tracks[0]
        if syncmath.rms(ref) < syncmath.SILENT_RMS:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA,
                f"the reference {inputs[0].id!r} ({inputs[0].source!r}) is silent: nothing to "
                "place the others against; choose another reference",
                {"reference": inputs[0].id},
            )
        placements = [
            SyncPlacement(
                id=inputs[0].id, source=inputs[0].source, placed=True, sync_offset=0.0,
                confidence=1.0, reason="reference",
            )
        ]  # fmt: skip
        ref_onset = syncmath.onset(ref, ANALYSIS_RATE)
        for n, (item, track) in enumerate(zip(inputs[1:], tracks[1:], strict=True), start=1):
            ctx.check_cancelled()
            found = syncmath.place(
                ref, track, ANALYSIS_RATE, min_overlap=spec.min_overlap_seconds,
                max_offset=spec.max_offset_seconds, ref_onset=ref_onset,
            )  # fmt: skip
            placements.append(self._placement(item, found, spec.fps))
            ctx.report_progress("analyse", n / max(1, len(inputs) - 1))
            ctx.log_line(f"sync {item.id}: {found}")
        external = placements.pop() if spec.external_audio else None
        return SyncResult(
            reference=inputs[0].id, fps=spec.fps, angles=self._in_job_order(spec, placements),
            external_audio=external,
        )  # fmt: skip

    @staticmethod
    def _in_job_order(spec: SyncJob, placements: list[SyncPlacement]) -> list[SyncPlacement]:
        by_id = {p.id: p for p in placements}
        return [by_id[a.id] for a in spec.angles]

    @staticmethod
    def _placement(item: SyncInput, found: syncmath.Placement, fps: float) -> SyncPlacement:
        if found.reason != "placed" or found.offset is None:
            return SyncPlacement(
                id=item.id, source=item.source, placed=False, sync_offset=None,
                confidence=0.0, reason=found.reason,
                windows_tried=found.windows_tried,
            )  # fmt: skip
        moved = abs(found.offset_at_end - found.offset_at_start)
        drift = SyncDrift(
            ppm=round(found.ppm, 2), offset_at_start=round(found.offset_at_start, 6),
            offset_at_end=round(found.offset_at_end, 6),
            overlap_start=round(found.overlap[0], 3), overlap_end=round(found.overlap[1], 3),
            exceeds_frame=moved > 1.0 / fps,
        )  # fmt: skip
        return SyncPlacement(
            id=item.id, source=item.source, placed=True, sync_offset=round(found.offset, 6),
            confidence=found.confidence, reason="placed", drift=drift,
            windows_used=found.windows_used, windows_tried=found.windows_tried,
        )  # fmt: skip
