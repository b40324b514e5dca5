"""Planning an export: a PURE function from (job, probe results, settings, paths) to a Plan.

reencode (reencode.py): one ffmpeg pass, frame-accurate. copy (streamcopy.py): packets
copied between clean keyframe cuts (remux.py runs it), audio cut once. smart (smart.py):
frame-accurate, encoding only the frames around the cuts and copying the rest. auto: copy
when every cut is already on a clean point (nothing would move) and the angles are
compatible; else smart when the sources allow it; else reencode. The preflight report
says which path was taken and why.
"""

from __future__ import annotations

from typing import Any

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import needs_reencode
from spooler.export.commands import Plan, PlanPaths
from spooler.export.encoders import ENCODERS
from spooler.export.models import ExportJob
from spooler.export.output import CONTAINER_VIDEO
from spooler.export.probed import (
    Source,
    audio_needs,
    audio_padding,
    audio_spans,
    check_coverage,
)
from spooler.export.reencode import output_fps, plan_reencode
from spooler.export.smart import SmartUnavailable, plan_smart, smart_blockers
from spooler.export.streamcopy import copy_blockers, plan_copy, snap_cuts
from spooler.export.timeline import job_pieces, quantise
from spooler.export.warmup import NonReference


def angle_report(job: ExportJob, sources: dict[str, Source], used: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for angle_id in used:
        source = sources[job.angle(angle_id).source]
        info = source.info
        report[angle_id] = {
            "source": source.name,
            "codec": info.video_codec,
            "width": info.width,
            "height": info.height,
            "fps": float(info.fps) if info.fps else None,
            "timeBase": str(source.index.time_base) if source.index else None,
            "keyframeInterval": source.index.keyframe_interval() if source.index else None,
            "duration": round(source.video_end, 6),
            "rotation": info.rotation,
            "pixFmt": info.pix_fmt,
            "audio": info.audio_codec,
        }
    return report


def plan_export(
    job: ExportJob,
    sources: dict[str, Source],
    settings: Settings,
    paths: PlanPaths,
    non_reference: NonReference | None = None,
    *,
    cores: int = 2,
) -> Plan:
    """The whole plan for `job`, from probe results only: no process, no disk. The one read
    it may ask for is `non_reference` (the shell's sources.non_reference_packets: the
    warm-up packets of a smart render or a reencode that need not be decoded, warmup.py);
    None drops nothing. `cores`: the CPUs ffmpeg may use, which its thread counts share
    (the kind passes the process's affinity; pure tests plan for 2)."""
    pieces = job_pieces(job)
    if not pieces:
        raise JobError(ErrorCode.INVALID_JOB, "range: selects nothing of the timeline")
    used = list(dict.fromkeys(p.angle for p in pieces))
    # Audio against each audio stream's own span, before a mode is chosen: the same
    # source_too_short in every mode, and the same padding within the tolerance.
    uses, spans = audio_needs(job, pieces), audio_spans(sources)
    check_coverage([u for u in uses if u.source in spans], {}, 0.0, spans)
    preflight: dict[str, Any] = {
        "mode": job.mode,
        "angles": angle_report(job, sources, used),
        "audioPadding": audio_padding(uses, spans),
    }
    codec: str = job.output.video_codec
    if job.mode == "reencode":
        reason = "reencode requested"
    elif job.mode == "smart":
        reason = "smart requested"
    else:
        # The sources and output (streamcopy.py), then the job's own content (transitions,
        # watermark, renditions: needs_reencode.py, which validation applies to mode copy).
        blockers = copy_blockers(job, sources, used) + needs_reencode.reasons(job)
        cuts = snap_cuts(job, sources, pieces) if not blockers else None
        if isinstance(cuts, str):
            blockers.append(cuts)
        if not blockers:
            assert isinstance(cuts, list)
            reason = (
                "copy requested"
                if job.mode == "copy"
                else "auto: the angles are compatible and every cut is already on a keyframe"
            )
            plan = plan_copy(job, sources, settings, paths, pieces, cuts, reason, preflight)
            if job.mode == "copy" or not plan.snaps:
                return plan
            reason = f"auto: {len(plan.snaps)} cut(s) are not on keyframes; copy would move them"
        elif job.mode == "copy":
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA,
                "copy is not possible: " + "; ".join(blockers),
                {"reasons": blockers},
            )
        else:
            reason = "auto: copy is not possible (" + "; ".join(blockers) + ")"
    if job.mode in ("auto", "smart"):
        problems, angle_frames = smart_blockers(job, sources, used)
        if not problems:
            try:
                return plan_smart(
                    job,
                    sources,
                    settings,
                    paths,
                    angle_frames,
                    reason,
                    preflight,
                    non_reference,
                    cores=cores,
                )
            except SmartUnavailable as exc:
                problems = [str(exc)]
        reason += "; smart render is not possible (" + "; ".join(problems) + "): re-encoding"
    if codec == "copy":
        first = sources[job.angle(used[0]).source].info.video_codec
        codec = (
            first
            if first in ENCODERS and first in CONTAINER_VIDEO[job.output.container]
            else "h264"
        )
        reason += f"; encoding {codec} instead of copying"
    fps = output_fps(job, pieces, sources)
    frames = quantise(pieces, fps)
    if not frames:
        raise JobError(ErrorCode.INVALID_JOB, "range: selects less than one frame")
    return plan_reencode(
        job,
        sources,
        settings,
        paths,
        frames,
        fps,
        codec,
        reason,
        preflight,
        non_reference,
        cores=cores,
    )
