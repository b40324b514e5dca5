"""The smart plan: frame-exact cuts at close to stream-copy cost (H.264 sources).

Each piece of the edit shows source frames [s0, s1) of its angle. Only the frames that
cannot be copied are encoded:
  head: s0 up to the first clean IDR keyframe inside the piece,
  body: that IDR up to the last clean stopping point at or before s1 (copied packets),
  tail: the frames after that stopping point up to s1 (B-frames there would reference
        frames past the cut).
A piece with no IDR inside it, or whose angle cannot share the track (other codec or
parameter sets), is encoded whole. Encoded frames are the same source frames a copy would
show: no frame moves, and the output is the timeline's exact length.

Encoded parts use x264 with the source's profile, level, pixel format, colour description
and B-frame structure (read from the packet order), an IDR at each part's start (closed
GOPs: a part never references another), and parameter sets with an id the source does not
use; the remux puts both sets in the track's avcC (h264.py). Parts are encoded by a few ffmpeg
processes at once (`export.smart_workers`), each a contiguous run of the timeline.

Longer than most modules: whether smart render can serve a job, the split of every piece
into encoded and copied parts, and the encoder settings that let both share one H.264
track are one decision, and are kept in one place (the GOP analysis is gop.py, the
shared graph toolkit graph.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import needs_reencode
from spooler.export.commands import (
    MIME,
    Command,
    CopySegment,
    EncodedPart,
    Plan,
    PlanPaths,
    fmt,
    rate_text,
)
from spooler.export.encoders import DEFAULT_PRESET, encoder_threads
from spooler.export.gop import Frames, Part, split_piece
from spooler.export.graph import (
    Graph,
    PieceInputs,
    Span,
    command_args,
    piece_inputs,
)
from spooler.export.models import ExportJob
from spooler.export.output import CONTAINER_VIDEO, nominal_rate
from spooler.export.probed import Need, Source, check_needs
from spooler.export.streamcopy import plan_audio
from spooler.export.timeline import frame_index, job_pieces, quantise
from spooler.export.warmup import NonReference, drop_options, entry_packets
from spooler.h264 import AvcConfig, free_id

X264_PROFILES = {
    "Baseline": "baseline",
    "Constrained Baseline": "baseline",
    "Main": "main",
    "High": "high",
}
SMART_PIX_FMTS = frozenset({"yuv420p"})
DEFAULT_CRF = 17  # encoded parts sit between copied camera footage: keep them close to it
# Frames an encoded part's entry starts before its first (graph.piece_inputs' margin).
READ_MARGIN_FRAMES = 2
# Progress weights: wall seconds per second of media, roughly, on a small machine. Video
# encoding dominates; the audio bed (decode + AAC) and the packet copy are 20-60x faster.
AUDIO_WEIGHT = 1 / 20
REMUX_WEIGHT = 1 / 60


class SmartUnavailable(Exception):
    """The edit needs what only a reencode can give (plan_export falls back to it)."""


def smart_blockers(
    job: ExportJob, sources: dict[str, Source], used: list[str]
) -> tuple[list[str], dict[str, Frames]]:
    """Why smart render cannot serve this job at all (pure), and each angle's frames."""
    out = job.output
    ref = sources[job.angle(used[0]).source]
    info = ref.info
    reasons: list[str] = []
    if info.video_codec != "h264":
        reasons.append(f"{used[0]} is {info.video_codec}: smart render joins H.264 only")
    if out.video_codec not in ("copy", "h264"):
        reasons.append(f"output.videoCodec {out.video_codec} differs from the sources' h264")
    if "h264" not in CONTAINER_VIDEO[out.container]:
        reasons.append(f"h264 cannot be stored in {out.container}")
    if out.size.mode != "keep":
        reasons.append("output.size is not 'keep'")
    # Transitions, a watermark and renditions need the decoded frames (needs_reencode.py).
    reasons += needs_reencode.reasons(job)
    if info.pix_fmt not in SMART_PIX_FMTS:
        reasons.append(f"{used[0]}'s pixel format {info.pix_fmt} is not 8-bit 4:2:0")
    if info.profile not in X264_PROFILES:
        reasons.append(f"{used[0]}'s H.264 profile {info.profile} cannot be matched")
    if info.rotation or info.sar != 1:
        reasons.append(f"{used[0]} has a rotation or non-square pixels")
    readable = False  # the avcC: without it no keyframe can be told an IDR either
    try:
        if AvcConfig.parse(info.extradata or b"").length_size != 4:
            reasons.append(f"{used[0]} uses NAL length prefixes other than 4 bytes")
        readable = True
    except ValueError as exc:
        reasons.append(f"{used[0]}'s parameter sets cannot be read ({exc})")
    frames: dict[str, Frames] = {}
    duration: Fraction | None = None
    for angle_id in used:
        source = sources[job.angle(angle_id).source]
        found = Frames.of(source.index) if source.index else None
        if found is None:
            reasons.append(f"{angle_id} does not have a constant frame rate")
            continue
        frames[angle_id] = found
        assert source.index is not None
        seconds = found.step * source.index.time_base
        duration = duration or seconds
        if seconds != duration:
            reasons.append(f"{angle_id}'s frame rate differs from {used[0]}'s")
        if angle_id != used[0] and (
            source.info.display_size != info.display_size or source.info.rotation
        ):
            reasons.append(f"{angle_id}'s size or rotation differs from {used[0]}'s")
        if source.info.sar != 1:
            reasons.append(f"{angle_id} has non-square pixels")
    if duration is not None and out.fps_value is not None and out.fps_value != 1 / duration:
        reasons.append("output.fps differs from the sources' frame rate")
    if readable and used[0] in frames and not frames[used[0]].heads:
        reasons.append(f"{used[0]} has no IDR keyframe")
    return reasons, frames


def _joinable(reference: Source, source: Source) -> str | None:
    """Why an angle's packets cannot share the reference angle's track (None: they can)."""
    if source.info.video_codec != "h264":
        return f"codec {source.info.video_codec}"
    if source.info.extradata != reference.info.extradata:
        return "different codec parameters (SPS/PPS)"
    if source.index is None or reference.index is None:
        return "no packet index"
    if source.index.time_base != reference.index.time_base:
        return "different time base"
    return None


@dataclass(frozen=True)
class _Placed:
    """A part placed on the output: its first output frame and where its frames come from."""

    label: str
    angle: str
    part: Part
    out_first: int


def plan_smart(
    job: ExportJob,
    sources: dict[str, Source],
    settings: Settings,
    paths: PlanPaths,
    frames: dict[str, Frames],
    reason: str,
    preflight: dict[str, Any],
    non_reference: NonReference | None = None,
    *,
    cores: int,
) -> Plan:
    used = list(frames)
    reference = sources[job.angle(used[0]).source]
    ref_frames = frames[used[0]]
    assert reference.index is not None
    fps = nominal_rate(1 / (ref_frames.step * reference.index.time_base))
    pieces = quantise(job_pieces(job), fps)
    if not pieces:
        raise JobError(ErrorCode.INVALID_JOB, "range: selects less than one frame")
    origin = pieces[0].first
    placed: list[_Placed] = []
    report: list[dict[str, Any]] = []
    needs: list[Need] = []
    short: list[str] = []
    for piece in pieces:
        angle = job.angle(piece.angle)
        source = sources[angle.source]
        assert source.index is not None
        angle_frames = frames[piece.angle]
        # Output frame k shows the source frame nearest to k / fps + syncOffset.
        first_time = source.index.time(angle_frames.first)
        shift = frame_index(Fraction(angle.sync_offset) - first_time, fps)
        start, stop = piece.first + shift, piece.stop + shift
        needs.append(
            Need(
                piece.label,
                piece.angle,
                angle.source,
                Fraction(angle.sync_offset),
                piece.first / fps,
                piece.stop / fps,
            )
        )
        if start < 0 or stop > angle_frames.count:
            side = "before its first" if start < 0 else "past its last"
            short.append(f"{piece.label} needs a frame of {piece.angle} {side}")
            continue  # check_coverage below names the piece and the missing time
        why = _joinable(reference, source)
        parts = split_piece(angle_frames, start, stop, why is None)
        for part in parts:
            placed.append(_Placed(piece.label, piece.angle, part, part.start - shift - origin))
        copied = sum(p.frames for p in parts if p.kind == "copy")
        report.append(
            {
                "label": piece.label,
                "angle": piece.angle,
                "frames": stop - start,
                "copiedFrames": copied,
                "encodedFrames": stop - start - copied,
                "why": _why(parts, why),
            }
        )
    check_needs(needs, sources, fps)
    if short:
        # Within check_coverage's half-frame slack (a video that starts a little after
        # its file's time 0, or ends a little early), but a whole frame is missing: the
        # reencode holds the nearest one there.
        raise SmartUnavailable(
            short[0] + (f" (and {len(short) - 1} more)" if len(short) > 1 else "")
        )
    encoded = [p for p in placed if p.part.kind == "encode"]
    groups = _groups(encoded, settings.export.smart_workers)
    sps = free_id(AvcConfig.parse(reference.info.extradata or b""))
    commands: list[Command] = []
    group_of: dict[_Placed, tuple[Path, int]] = {}  # -> (piece file, first frame in it)
    lists_per_group = len(job.angles) + 2  # as the kind allots them
    for g, group in enumerate(groups):
        piece_file = paths.output.with_name(f"{paths.output.name}.part{g}.mp4")
        group_paths = replace(
            paths,
            graph=paths.graph.with_name(f"{paths.graph.name}.{g}"),
            lists=paths.lists[g * lists_per_group : (g + 1) * lists_per_group],
        )
        args, files = _encode_command(
            job,
            sources,
            frames,
            group,
            group_paths,
            fps,
            sps,
            reference,
            settings,
            len(groups),
            non_reference,
            cores,
        )
        args += ["-f", "mp4", f"file:{piece_file}"]
        count = 0
        for item in group:
            group_of[item] = (piece_file, count)
            count += item.part.frames
        commands.append(
            Command(f"encode {g + 1}/{len(groups)}", args, float(count / fps), files, True)
        )
    video_parts: list[CopySegment | EncodedPart] = []
    for item in placed:
        source = sources[job.angle(item.angle).source]
        assert source.index is not None
        angle_frames = frames[item.angle]
        if item.part.kind == "copy":
            packets = source.index.packets
            head_time = source.index.time(angle_frames.first + item.part.start * angle_frames.step)
            video_parts.append(
                CopySegment(
                    item.label,
                    item.angle,
                    source.location,
                    packets[item.part.head_packet].dts,
                    packets[item.part.stop_packet].dts
                    if item.part.stop_packet < len(packets)
                    else None,
                    shift=item.out_first / fps - head_time,
                )
            )
        else:
            piece_file, first = group_of[item]
            video_parts.append(
                EncodedPart(
                    item.label,
                    item.angle,
                    piece_file,
                    first,
                    item.part.frames,
                    pts=item.out_first * ref_frames.step,
                    step=ref_frames.step,
                    rate=fps,
                )
            )
    total = sum(p.frames for p in pieces)
    duration = Fraction(total) / fps
    audio_paths = replace(
        paths,
        graph=paths.graph.with_name(f"{paths.graph.name}.audio"),
        lists=paths.lists[len(groups) * lists_per_group :],
    )
    spans = [Span(p.angle, p.first / fps, p.stop / fps, p.label) for p in pieces]
    audio, audio_commands, audio_needs = plan_audio(
        job, sources, audio_paths, spans, origin / fps, pieces[-1].stop / fps
    )
    check_needs(audio_needs, sources, fps)
    copied = sum(r["copiedFrames"] for r in report)
    width, height = reference.info.display_size or (0, 0)
    return Plan(
        mode="smart",
        reason=reason,
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        want_audio=audio is not None,
        mime_type=MIME[job.output.container],
        # The audio bed (when it cannot be copied) runs beside the video encoders, not
        # before them: the same CPU, less wall time.
        commands=[
            *(
                replace(c, weight=c.expected_seconds * AUDIO_WEIGHT, parallel=True)
                for c in audio_commands
            ),
            *commands,
        ],
        remux_weight=float(duration) * REMUX_WEIGHT,
        copy_segments=video_parts,
        copy_audio=audio,
        template=reference.location,
        intermediates=list(dict.fromkeys(file for file, _ in group_of.values())),
        preflight={
            **preflight,
            "path": "smart",
            "reason": reason,
            "output": {
                "fps": rate_text(fps),
                "frames": total,
                "duration": round(float(duration), 6),
                "pieces": len(pieces),
                "copiedFrames": copied,
                "encodedFrames": total - copied,
                "encodeProcesses": len(groups),
            },
            "segments": report,
        },
    )


def _why(parts: list[Part], unjoinable: str | None) -> str:
    if unjoinable:
        return f"encoded whole: {unjoinable}"
    if not any(p.kind == "copy" for p in parts):
        return "encoded whole: no IDR keyframe with a clean stop inside the piece"
    shape = []
    if parts[0].kind == "encode":
        shape.append("head encoded up to the next IDR keyframe")
    shape.append("body copied")
    if parts[-1].kind == "encode":
        shape.append("tail encoded after the last clean stop")
    return ", ".join(shape)


def _groups(encoded: list[_Placed], workers: int) -> list[list[_Placed]]:
    """Contiguous runs of the encoded parts with about equal frame counts."""
    total = sum(p.part.frames for p in encoded)
    count = max(1, min(workers, len(encoded)))
    groups: list[list[_Placed]] = [[] for _ in range(count)]
    done = 0
    for item in encoded:
        g = min(count - 1, done * count // max(total, 1))
        groups[g].append(item)
        done += item.part.frames
    return [g for g in groups if g]


def _encode_command(
    job: ExportJob,
    sources: dict[str, Source],
    frames: dict[str, Frames],
    group: list[_Placed],
    paths: PlanPaths,
    fps: Fraction,
    sps: int,
    reference: Source,
    settings: Settings,
    workers: int,
    non_reference: NonReference | None,
    cores: int,
) -> tuple[list[str], dict[Path, str]]:
    """One ffmpeg run: the group's parts back to back, an IDR at each part's start."""
    # Several encoders run at once: each gets its share of the cores (each process's own
    # default would oversubscribe them; measured 9 % less CPU for the same frames).
    threads = settings.ffmpeg_threads or max(1, cores // workers)
    graph = Graph()
    half = 1 / (2 * fps)
    spans: list[Span] = []
    windows: list[tuple[Fraction, Fraction]] = []
    for item in group:
        angle = job.angle(item.angle)
        source = sources[angle.source]
        assert source.index is not None
        angle_frames = frames[item.angle]
        step = source.index.time_base * angle_frames.step
        first = source.index.time(angle_frames.first)
        begin, end = first + item.part.start * step, first + item.part.stop * step
        offset = Fraction(angle.sync_offset)
        spans.append(Span(item.angle, begin - offset, end - offset, item.label))
        windows.append((begin - half, end - half))
    inputs = piece_inputs(
        job,
        sources,
        graph,
        spans,
        list(paths.lists),
        lambda source: READ_MARGIN_FRAMES / Fraction(source.info.fps or fps),
        video=True,
        audio=False,
        postroll=False,  # trimmed to the part's exact frames: read no further than they need
    )
    drops = _warm_up_drops(job, sources, frames, group, inputs, non_reference)
    graph.inputs = [  # the decoders
        ["-threads", str(threads), *drops.get(k, []), *args] for k, args in enumerate(graph.inputs)
    ]
    labels = []
    for i, (begin, end) in enumerate(windows):
        # Exactly the part's source frames: each lies half a frame inside the window.
        base = inputs.bases[i]
        graph.chains.append(
            f"{inputs.video[i]}trim=start={fmt(begin - base)}:end={fmt(end - base)},"
            f"setpts=PTS-STARTPTS[e{i}]"
        )
        labels.append(f"[e{i}]")
    graph.chains.append(
        f"{''.join(labels)}concat=n={len(labels)}:v=1:a=0,"
        f"settb={rate_text(1 / fps)},setpts=N,format=yuv420p[vout]"
    )
    args, files = command_args(graph, paths)
    starts, at = [], 0
    for item in group[:-1]:
        at += item.part.frames
        starts.append(fmt((at - Fraction(1, 2)) / fps))
    info = reference.info  # the track's own stream: every encoded part matches it
    structure = frames[next(iter(frames))]  # the reference angle's frames come first
    out = job.output
    # The source's reference structure: the same B-frame run and pyramid, so a decoder's
    # reorder buffer holds the same frames at every join (OpenH264 loses the frames still
    # waiting in it when an IDR of a shallower structure follows).
    pyramid = "normal" if structure.reorder >= 2 else "none"
    x264 = f"sps-id={sps}:bframes={structure.bframes}:b-pyramid={pyramid}:scenecut=0:open-gop=0"
    primaries, transfer, matrix, colour_range = info.colour
    quality = (
        ["-b:v", f"{out.video_bitrate_kbps}k"]
        if out.video_bitrate_kbps is not None
        else ["-crf", str(out.crf if out.crf is not None else DEFAULT_CRF)]
    )
    args += [
        "-map",
        "[vout]",
        "-c:v",
        "libx264",
        "-preset",
        out.preset or DEFAULT_PRESET["h264"],
        *quality,
        "-profile:v",
        X264_PROFILES.get(info.profile or "", "high"),
        *(["-level:v", str(info.level)] if info.level else []),
        "-x264-params",
        x264,
        "-forced-idr",
        "1",
        *(["-force_key_frames", ",".join(starts)] if starts else []),
        "-pix_fmt",
        "yuv420p",
        "-color_primaries",
        str(primaries),
        "-color_trc",
        str(transfer),
        "-colorspace",
        str(matrix),
        "-color_range",
        str(colour_range),
        "-r",
        rate_text(fps),
        "-fps_mode",
        "cfr",
        *encoder_threads(threads),
        "-an",
        "-map_metadata",
        "-1",
    ]
    return args, files


def _warm_up_drops(
    job: ExportJob,
    sources: dict[str, Source],
    frames: dict[str, Frames],
    group: list[_Placed],
    inputs: PieceInputs,
    non_reference: NonReference | None,
) -> dict[int, list[str]]:
    """Per input: the options that skip decoding the non-reference pictures its parts'
    warm-ups and margins read but no part shows (warmup.py). A part shows exactly its
    frames."""
    if non_reference is None:
        return {}
    by_angle: dict[str, list[tuple[_Placed, tuple[Fraction, Fraction]]]] = {}
    for item, window in zip(group, inputs.reads, strict=True):
        by_angle.setdefault(item.angle, []).append((item, window))
    unshown: dict[int, tuple[Source, set[int]]] = {}
    for angle_id, items in by_angle.items():
        source = sources[job.angle(angle_id).source]
        index, angle_frames = source.index, frames[angle_id]
        assert index is not None
        # Display frame (counted from the angle's first) -> decode index.
        decode_of = {
            (p.pts - angle_frames.first) // angle_frames.step: i
            for i, p in enumerate(index.packets)
        }
        read: set[int] = set()
        for packets in entry_packets(index, [window for _, window in items]):
            read.update(packets)
        shown = {decode_of[f] for item, _ in items for f in range(item.part.start, item.part.stop)}
        unshown[inputs.input_of[angle_id]] = (source, read - shown)
    return drop_options(unshown, non_reference)
