"""The copy plan: snap cuts to clean stream-copy points, list the packets to copy.

A cut can be stream-copied only where the incoming angle has a keyframe that no later
packet is shown before (a clean head) AND the outgoing angle can stop with every packet
before the stop shown before every packet after it (a clean tail: no B-frame loses its
reference, no extra frame is shown). Each cut moves to the nearest incoming keyframe whose
time is, within half a frame, also a clean tail of the outgoing angle.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.export import audiograph
from spooler.export.commands import (
    MIME,
    AudioCopy,
    Command,
    CopySegment,
    Plan,
    PlanPaths,
    Snap,
    VideoPart,
)
from spooler.export.encoders import audio_encoder
from spooler.export.graph import Graph, Span, command_args, piece_inputs
from spooler.export.models import ExportJob, FollowAudio, NoAudio
from spooler.export.output import CONTAINER_VIDEO, nominal_rate
from spooler.export.probed import PAD_EPSILON, Need, Source, check_needs
from spooler.export.timeline import Piece
from spooler.mediainfo import VideoIndex


def copy_blockers(job: ExportJob, sources: dict[str, Source], angles: list[str]) -> list[str]:
    """Why the used angles cannot be stream-copied into the requested output (pure)."""
    out = job.output
    reasons: list[str] = []
    if out.size.mode != "keep":
        reasons.append("output.size is not 'keep'")
    first = sources[job.angle(angles[0]).source].info
    fps = out.fps_value
    if fps is not None and (not first.fps or abs(float(fps) - float(first.fps)) > 1e-3):
        reasons.append("output.fps differs from the sources' frame rate")
    if out.video_codec not in ("copy", first.video_codec):
        reasons.append(
            f"output.videoCodec {out.video_codec} differs from the sources' {first.video_codec}"
        )
    if first.video_codec not in CONTAINER_VIDEO[out.container]:
        reasons.append(f"{first.video_codec} cannot be stored in {out.container}")
    for angle_id in angles[1:]:
        info = sources[job.angle(angle_id).source].info
        for what, mine, theirs in (
            ("codec", info.video_codec, first.video_codec),
            ("size", (info.width, info.height), (first.width, first.height)),
            ("pixel format", info.pix_fmt, first.pix_fmt),
            ("pixel aspect", info.sar, first.sar),
            ("rotation", info.rotation, first.rotation),
            ("codec parameters (SPS/PPS)", info.extradata, first.extradata),
        ):
            if mine != theirs:
                reasons.append(f"{angle_id}'s {what} differs from {angles[0]}'s")
        if not info.fps or not first.fps or abs(float(info.fps) - float(first.fps)) > 1e-3:
            reasons.append(f"{angle_id}'s frame rate differs from {angles[0]}'s")
    return reasons


def _heads(index: VideoIndex) -> tuple[list[Fraction], list[int]]:
    heads = index.heads()
    pairs = sorted((index.time(index.packets[i].pts), i) for i in heads)
    return [t for t, _ in pairs], [i for _, i in pairs]


def _tails(index: VideoIndex) -> tuple[list[Fraction], list[int]]:
    """Clean stopping points as (source time of the first frame NOT shown, packet index)."""
    tails = index.tails()
    suffix_min: list[int] = []
    low: int | None = None
    for packet in reversed(index.packets):
        low = packet.pts if low is None else min(low, packet.pts)
        suffix_min.append(low)
    suffix_min.reverse()
    pairs = sorted(
        (index.time(suffix_min[i]) if i < len(index.packets) else index.time(index.end_pts), i)
        for i in tails
    )
    return [t for t, _ in pairs], [i for _, i in pairs]


def _nearest(times: list[Fraction], target: Fraction, limit: int) -> list[int]:
    """Positions in sorted `times`, nearest to `target` first (at most `limit`)."""
    pos = bisect.bisect_left(times, target)
    lo, hi = pos - 1, pos
    out: list[int] = []
    while len(out) < limit and (lo >= 0 or hi < len(times)):
        if hi < len(times) and (lo < 0 or times[hi] - target <= target - times[lo]):
            out.append(hi)
            hi += 1
        else:
            out.append(lo)
            lo -= 1
    return out


@dataclass(frozen=True)
class _Cut:
    time: Fraction  # timeline
    head: int | None  # packet index where the incoming angle starts
    tail: int | None  # packet index before which the outgoing angle stops


def snap_cuts(job: ExportJob, sources: dict[str, Source], pieces: list[Piece]) -> list[_Cut] | str:
    """Move every cut onto a keyframe of the incoming angle at which the outgoing angle can
    also stop cleanly (within half a frame); the first start and the last end snap too.
    Returns the cuts, or why some cut has no such point nearby."""

    def idx(angle_id: str) -> tuple[VideoIndex, Fraction]:
        angle = job.angle(angle_id)
        index = sources[angle.source].index
        assert index is not None
        return index, Fraction(angle.sync_offset)

    heads_cache: dict[str, tuple[list[Fraction], list[int]]] = {}
    tails_cache: dict[str, tuple[list[Fraction], list[int]]] = {}

    def heads(angle_id: str) -> tuple[list[Fraction], list[int]]:
        if angle_id not in heads_cache:
            heads_cache[angle_id] = _heads(idx(angle_id)[0])
        return heads_cache[angle_id]

    def tails(angle_id: str) -> tuple[list[Fraction], list[int]]:
        if angle_id not in tails_cache:
            tails_cache[angle_id] = _tails(idx(angle_id)[0])
        return tails_cache[angle_id]

    cuts: list[_Cut] = []
    # Start: nearest clean keyframe of the first angle.
    offset = idx(pieces[0].angle)[1]
    times, ids = heads(pieces[0].angle)
    if not times:
        return f"{pieces[0].angle} has no keyframe to start from"
    pos = _nearest(times, pieces[0].start + offset, 1)[0]
    cuts.append(_Cut(times[pos] - offset, ids[pos], None))
    for j in range(1, len(pieces)):
        out_offset = idx(pieces[j - 1].angle)[1]
        in_offset = idx(pieces[j].angle)[1]
        heads_t, heads_i = heads(pieces[j].angle)
        tails_t, tails_i = tails(pieces[j - 1].angle)
        half = 1 / (2 * Fraction(sources[job.angle(pieces[j - 1].angle).source].info.fps or 30))
        found: _Cut | None = None
        for pos in _nearest(heads_t, pieces[j].start + in_offset, 64):
            when = heads_t[pos] - in_offset
            if when <= cuts[-1].time or when >= pieces[j].end:
                continue
            near = _nearest(tails_t, when + out_offset, 1)
            if near and abs(tails_t[near[0]] - (when + out_offset)) <= half:
                found = _Cut(when, heads_i[pos], tails_i[near[0]])
                break
        if found is None:
            return (
                f"no keyframe of {pieces[j].angle} near {float(pieces[j].start):.3f} s where "
                f"{pieces[j - 1].angle} can also stop cleanly"
            )
        cuts.append(found)
    offset = idx(pieces[-1].angle)[1]
    tails_t, tails_i = tails(pieces[-1].angle)
    pos = _nearest(tails_t, pieces[-1].end + offset, 1)[0]
    if tails_t[pos] - offset <= cuts[-1].time:
        return "the last piece vanishes when snapped to the end of its angle's packets"
    cuts.append(_Cut(tails_t[pos] - offset, None, tails_i[pos]))
    return cuts


def plan_copy(
    job: ExportJob,
    sources: dict[str, Source],
    settings: Settings,
    paths: PlanPaths,
    pieces: list[Piece],
    cuts: list[_Cut],
    reason: str,
    preflight: dict[str, Any],
) -> Plan:
    first = sources[job.angle(pieces[0].angle).source]
    fps = nominal_rate(Fraction(first.info.fps or 30))
    segments: list[VideoPart] = []
    snaps: list[Snap] = []
    needs: list[Need] = []
    origin = cuts[0].time
    for j, piece in enumerate(pieces):
        angle = job.angle(piece.angle)
        source = sources[angle.source]
        assert source.index is not None
        head, stop = cuts[j].head, cuts[j + 1].tail
        assert head is not None and stop is not None
        packets = source.index.packets
        head_time = source.index.time(packets[head].pts)
        segments.append(
            CopySegment(
                piece.label,
                piece.angle,
                source.location,
                packets[head].dts,
                packets[stop].dts if stop < len(packets) else None,
                shift=cuts[j].time - origin - head_time,
            )
        )
        requested = piece.start
        if abs(cuts[j].time - requested) * fps >= Fraction(1, 2):
            snaps.append(Snap(piece.label, piece.angle, float(requested), float(cuts[j].time)))
    if abs(cuts[-1].time - pieces[-1].end) * fps >= Fraction(1, 2):
        snaps.append(Snap("end", pieces[-1].angle, float(pieces[-1].end), float(cuts[-1].time)))
    duration = cuts[-1].time - origin
    want_audio = not isinstance(job.audio, NoAudio)
    spans = [Span(p.angle, cuts[j].time, cuts[j + 1].time, p.label) for j, p in enumerate(pieces)]
    audio, commands, audio_needs = plan_audio(job, sources, paths, spans, origin, cuts[-1].time)
    needs += audio_needs
    for j, piece in enumerate(pieces):
        angle = job.angle(piece.angle)
        needs.append(
            Need(
                piece.label,
                piece.angle,
                angle.source,
                Fraction(angle.sync_offset),
                cuts[j].time,
                cuts[j + 1].time,
            )
        )
    check_needs(needs, sources, fps)
    info = first.info
    width, height = info.display_size or (0, 0)
    return Plan(
        mode="copy",
        reason=reason,
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        want_audio=want_audio,
        mime_type=MIME[job.output.container],
        commands=commands,
        copy_segments=segments,
        copy_audio=audio,
        # Copying packets is I/O: far quicker than the audio encode before it.
        remux_weight=float(duration) / 10,
        snaps=snaps,
        preflight={
            **preflight,
            "path": "copy",
            "reason": reason,
            "output": {
                "duration": round(float(duration), 6),
                "pieces": len(pieces),
                "snappedCuts": len(snaps),
                "audio": "copied"
                if isinstance(audio, AudioCopy)
                else "encoded"
                if audio
                else "none",
            },
        },
    )


def plan_audio(
    job: ExportJob,
    sources: dict[str, Source],
    paths: PlanPaths,
    spans: list[Span],
    start: Fraction,
    end: Fraction,
) -> tuple[Path | AudioCopy | None, list[Command], list[Need]]:
    """The audio of a remuxed output (copy and smart): copied from the master angle when it
    already has the output's codec, else encoded once to `paths.audio` by one command."""
    needs: list[Need] = []
    master = _copyable_bed(job, sources)
    if master is not None:
        offset = Fraction(job.angle(master).sync_offset)
        name = job.angle(master).source
        span = sources[name].audio
        # A track a little short (within AUDIO_TOLERANCE) is encoded, padded, not copied:
        # the copy would end early and fail verification (issue 11).
        if span is None or span.end >= float(end + offset) - PAD_EPSILON:
            needs.append(Need("audio", master, name, offset, start, end, audio=True))
            return AudioCopy(sources[name].location, start + offset, end + offset), [], needs
    if isinstance(job.audio, NoAudio):
        return None, [], needs
    graph = Graph()
    if isinstance(job.audio, FollowAudio):
        # The video needs (checked by the caller) cover the same spans of the same files.
        inputs = piece_inputs(
            job,
            sources,
            graph,
            spans,
            list(paths.lists),
            lambda _: Fraction(0),
            video=False,
            audio=True,
        )
        labels = audiograph.follow_labels(job, graph, spans, inputs.audio, inputs.bases)
        total = audiograph.samples_at(end) - audiograph.samples_at(start)
        graph.chains.append(
            f"{''.join(labels)}concat=n={len(labels)}:v=0:a=1,asetpts=N/SR/TB"
            f"{audiograph.loudness_chain(job, total)}[aout]"
        )
    else:
        audiograph.audio_bed(job, sources, graph, start, end, needs, paths.lists)
    args, files = command_args(graph, paths)
    # mp4 keeps sample-exact timestamps (matroska rounds them to milliseconds).
    args += ["-map", "[aout]", *audio_encoder(job), "-f", "mp4", f"file:{paths.audio}"]
    return paths.audio, [Command("audio", args, float(end - start), files)], needs


def _copyable_bed(job: ExportJob, sources: dict[str, Source]) -> str | None:
    """The master angle, if its audio already has the output's codec (copy it, no encode)."""
    angle = job.audio_angle
    if angle is None or job.loudness is not None:
        return None
    info = sources[job.angle(angle).source].info
    return angle if info.audio_codec == job.output.audio_codec_value else None
