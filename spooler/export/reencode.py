"""The reencode plan: ONE ffmpeg pass whose filter graph cuts, normalises and joins.

Each piece of the edit gets its own branch (graph.py: one ffconcat input per angle, each
frame routed to its own piece's branch only):
  the piece's N frames (readchain.py: each output frame shows the last source frame whose
  time rounds to it or earlier: the nearest, or the previous one held where a
  variable-rate source misses frames; an exact trim where that is one source frame per
  output frame, else fps + tpad/trim) -> scale + pad|crop -> setsar
and the branches are concatenated, then stamped with exact constant-rate timestamps.

Up to the final [vout]/[aout] labels, four stages may join in, each in its own module:
transitions.py (windows around cuts: the branches become "reads" composed into the
concat's "parts"), watermark.py or textmark.py (an overlay or drawtext after the concat),
audiograph.py (the audio track, cut in samples; ambient mix; loudness) and renditions.py
(more outputs split from the finished picture and sound).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import audiograph, readchain, textmark, transitions, watermark
from spooler.export.commands import MIME, MUXERS, Command, Plan, PlanPaths, rate_text
from spooler.export.encoders import audio_encoder, shared_threads, video_encoder
from spooler.export.graph import Graph, PieceInputs, Span, command_args, piece_inputs
from spooler.export.models import ExportJob, FollowAudio, NoAudio
from spooler.export.output import ExactSize, HeightSize, nominal_rate
from spooler.export.probed import Need, Source, check_needs
from spooler.export.renditions import Branch, muxer_args, split_outputs
from spooler.export.teeout import one_audio_encode, stream_options, tee_slave
from spooler.export.timeline import FramePiece, Piece
from spooler.export.warmup import NonReference, drop_options, entry_packets


def output_fps(job: ExportJob, pieces: list[Piece], sources: dict[str, Source]) -> Fraction:
    chosen = job.output.fps_value
    if chosen is not None:
        return chosen
    info = sources[job.angle(pieces[0].angle).source].info
    if not info.fps:
        raise JobError(
            ErrorCode.UNSUPPORTED_MEDIA, f"{pieces[0].angle}: frame rate unknown; set output.fps"
        )
    return nominal_rate(Fraction(info.fps))


def output_size(job: ExportJob, first: Source) -> tuple[int, int]:
    """Keep / a height with the first angle's shape / an exact size; always even."""
    size = job.output.size
    if isinstance(size, ExactSize):
        return size.width, size.height
    shown = first.info.display_size
    assert shown is not None
    width = shown[0] * first.info.sar if first.info.rotation % 180 == 0 else Fraction(shown[0])
    height = Fraction(shown[1])
    if isinstance(size, HeightSize):
        width, height = width * size.height / height, Fraction(size.height)
    return 2 * math.floor(width / 2 + Fraction(1, 2)), 2 * math.floor(height / 2 + Fraction(1, 2))


def _normalise(source: Source, width: int, height: int, fit: str) -> str:
    """Filters that bring one angle to the output frame: size, aspect, square pixels."""
    info = source.info
    steps: list[str] = []
    if info.sar != 1:
        steps.append("scale=trunc(iw*sar/2)*2:ih,setsar=1")
    shown = info.display_size
    square = info.sar == 1 or info.rotation % 180
    if not (shown == (width, height) and square):
        if fit == "crop":
            steps.append(
                f"scale={width}:{height}:force_original_aspect_ratio=increase,crop={width}:{height}"
            )
        else:
            steps.append(
                f"scale={width}:{height}:force_original_aspect_ratio=decrease:"
                f"force_divisible_by=2,pad={width}:{height}:(ow-iw)/2:(oh-ih)/2"
            )
    steps.append("setsar=1")
    return ",".join(steps)


def _container_args(job: ExportJob, path: Path) -> list[str]:
    args = []
    if job.output.faststart and job.output.container in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    return [*args, "-f", MUXERS[job.output.container], f"file:{path}"]


def _separate_outputs(
    job: ExportJob,
    codec: str,
    fps: Fraction,
    threads: int,
    vmain: str,
    audio_label: str | None,
    branches: list[Branch],
    paths: PlanPaths,
) -> list[str]:
    """The main output and each rendition as outputs of their own: their own encoders."""
    args = ["-map", vmain, *video_encoder(job, codec, fps, threads)]
    if audio_label:
        args += ["-map", audio_label, *audio_encoder(job)]
    args += ["-map_metadata", "-1", *_container_args(job, paths.output)]
    for branch in branches:  # each rendition: its own encoders and file, same command
        r = branch.rendition
        if branch.video:
            args += ["-map", branch.video, *video_encoder(r, r.video_codec, fps, threads)]
        if branch.audio:
            args += ["-map", branch.audio, *audio_encoder(r)]
        args += muxer_args(r, branch.output.temp)
    return args


def _tee_output(
    job: ExportJob,
    codec: str,
    fps: Fraction,
    threads: int,
    vmain: str,
    audio_label: str,
    branches: list[Branch],
    paths: PlanPaths,
) -> list[str]:
    """Every output as a slave of one `tee` output (teeout.py): each video encoded once,
    the sound encoded once for all of them."""
    video = video_encoder(job, codec, fps, threads)
    args = ["-map", vmain, *stream_options(video, "v", 0)]
    faststart = job.output.faststart and job.output.container in ("mp4", "mov")
    slaves = [tee_slave(job.output.container, paths.output, "v:0,a", faststart=faststart)]
    index = 0
    for branch in branches:
        r = branch.rendition
        select = "a"
        if branch.video:
            index += 1
            video = video_encoder(r, r.video_codec, fps, threads)
            args += ["-map", branch.video, *stream_options(video, "v", index)]
            select = f"v:{index},a"
        slaves.append(tee_slave(r.container_value, branch.output.temp, select, faststart=True))
    # Global headers: each slave muxer needs the parameter sets in the stream's extradata
    # (a tee output does not ask the encoders for them as an mp4 output does).
    args += ["-map", audio_label, *audio_encoder(job), "-flags", "+global_header"]
    return [*args, "-map_metadata", "-1", "-f", "tee", "|".join(slaves)]


def _warm_up_drops(
    job: ExportJob,
    sources: dict[str, Source],
    spans: list[Span],
    inputs: PieceInputs,
    margin: Callable[[Source], Fraction],
    fps: Fraction,
    non_reference: NonReference | None,
) -> dict[int, list[str]]:
    """Per input: the options that skip decoding the non-reference pictures before each
    read's frames (warmup.py: most of the growth of CPU with cuts is this warm-up). A read
    shows nothing before its chain's first trim (its start less the margin); an output
    frame earlier, and the source frame before that (which a variable-rate source holds),
    are kept too."""
    if non_reference is None:
        return {}
    by_angle: dict[str, list[tuple[Fraction, tuple[Fraction, Fraction]]]] = {}
    for span, read in zip(spans, inputs.reads, strict=True):
        angle = job.angle(span.angle)
        first = span.start + Fraction(angle.sync_offset) - margin(sources[angle.source]) - 1 / fps
        by_angle.setdefault(span.angle, []).append((first, read))
    unshown: dict[int, tuple[Source, set[int]]] = {}
    for angle_id, items in by_angle.items():
        source = sources[job.angle(angle_id).source]
        index = source.index
        if index is None:
            continue
        shown_order = sorted(p.pts for p in index.packets)
        warm_up: set[int] = set()
        shown: set[int] = set()
        entries = entry_packets(index, [window for _, window in items])
        for (first, _), packets in zip(items, entries, strict=True):
            before = bisect.bisect_left(shown_order, (first + index.origin) / index.time_base)
            keep = shown_order[before - 1] if before > 0 else -math.inf
            for i in packets:
                (shown if index.packets[i].pts >= keep else warm_up).add(i)
        unshown[inputs.input_of[angle_id]] = (source, warm_up - shown)
    return drop_options(unshown, non_reference)


def plan_reencode(
    job: ExportJob,
    sources: dict[str, Source],
    settings: Settings,
    paths: PlanPaths,
    frames: list[FramePiece],
    fps: Fraction,
    codec: str,
    reason: str,
    preflight: dict[str, Any],
    non_reference: NonReference | None = None,
    *,
    cores: int,
) -> Plan:
    first = sources[job.angle(frames[0].angle).source]
    width, height = output_size(job, first)
    fit = job.output.size.fit if isinstance(job.output.size, ExactSize) else "pad"
    graph = Graph()
    needs: list[Need] = []
    follow = isinstance(job.audio, FollowAudio)
    # Reads: what each branch renders (the pieces, plus what transitions need); parts: what
    # the concat joins (transitions.py). Hard cuts only: one read per piece, one part each.
    layout = transitions.layout(job, frames, fps)
    reads = layout.reads
    spans = [Span(p.angle, p.first / fps, p.stop / fps, p.label) for p in reads]

    def margin(source: Source) -> Fraction:
        # Room for the source frame just before the first output frame (nearest wins).
        return 2 / Fraction(source.info.fps or fps)

    inputs = piece_inputs(
        job,
        sources,
        graph,
        spans,
        list(paths.lists),
        margin,
        video=True,
        audio=follow,
    )
    vin, ain, bases = inputs.video, inputs.audio, inputs.bases
    # One decoder per angle, slice threads only (issue 18, measured on 1080p H.264 High):
    # frame threads hold threads + delay frames per decoder and refill their pipeline at
    # every seek; three of them took ffmpeg from 410 to 452 MB at the same CPU.
    drops = _warm_up_drops(job, sources, spans, inputs, margin, fps, non_reference)
    graph.inputs = [
        ["-thread_type", "slice", *drops.get(k, []), *args] for k, args in enumerate(graph.inputs)
    ]
    video_labels: list[str] = []
    # Reads that go straight to the concat may skip fps (readchain.py); those a transition
    # blends keep it: xfade wants the constant-rate link fps makes.
    direct = {p.reads[0] for p in layout.parts if layout.plain or transitions.is_plain(p)}
    frame_pts: dict[str, list[int]] = {}
    exact = 0
    for i, (piece, span) in enumerate(zip(reads, spans, strict=True)):
        angle = job.angle(piece.angle)
        source = sources[angle.source]
        needs.append(
            Need(
                piece.label,
                piece.angle,
                angle.source,
                Fraction(angle.sync_offset),
                span.start,
                span.end,
            )
        )
        src_start = span.start + Fraction(angle.sync_offset)
        window = None
        if i in direct and source.index is not None:
            if angle.source not in frame_pts:
                frame_pts[angle.source] = sorted(p.pts for p in source.index.packets)
            pts = frame_pts[angle.source]
            window = readchain.exact_window(pts, source.index, src_start, piece.frames, fps)
        if window is not None:
            chain = readchain.exact_chain(window, bases[i], fps)
        else:
            seek = max(Fraction(0), src_start - margin(source))
            src_end = src_start + span.end - span.start + margin(source)
            chain = readchain.resampled_chain(seek, src_start, src_end, piece.frames, bases[i], fps)
        exact += window is not None
        chain.append(_normalise(source, width, height, fit))
        graph.chains.append(f"{vin[i]}{','.join(chain)}[v{i}]")
        video_labels.append(f"[v{i}]")
    video_labels = transitions.compose_video(
        graph.chains, layout, video_labels, fps, (width, height)
    )
    parts = len(layout.parts)
    want_audio = not isinstance(job.audio, NoAudio)
    start, end = frames[0].first / fps, frames[-1].stop / fps
    total = sum(p.frames for p in frames)
    if follow:
        # Audio comes from the same inputs as the video, so the video needs cover it.
        alabels_follow = audiograph.follow_labels(job, graph, spans, ain, bases, fades=layout.plain)
        if not layout.plain:
            alabels_follow = transitions.compose_audio(
                graph.chains,
                layout,
                alabels_follow,
                lambda frame: audiograph.samples_at(Fraction(frame) / fps),
                audiograph.FADE_SAMPLES,
            )
        pairs = "".join(v + a for v, a in zip(video_labels, alabels_follow, strict=True))
        graph.chains.append(f"{pairs}concat=n={parts}:v=1:a=1[vcat][acat]")
        samples = audiograph.samples_at(end) - audiograph.samples_at(start)
        loudness = audiograph.loudness_chain(job, samples)
        graph.chains.append(f"[acat]asetpts=N/SR/TB{loudness}[aout]")
        audio_label: str | None = "[aout]"
    else:
        graph.chains.append(f"{''.join(video_labels)}concat=n={parts}:v=1:a=0[vcat]")
        bed_lists = paths.lists[len(graph.inputs) :]
        audio_label = (
            audiograph.audio_bed(job, sources, graph, start, end, needs, bed_lists)
            if want_audio
            else None
        )
    retime = f"settb={rate_text(1 / fps)},setpts=N"
    spot = None
    text = None
    if job.watermark is not None and job.watermark.text is not None:
        text = textmark.text_chain(
            job,
            settings.export.watermark_font,
            paths,
            (width, height),
            (frames[0].first, total),
            fps,
        )
    elif job.watermark is not None and job.watermark.image is not None:
        image = sources[job.watermark.image]
        assert image.info.width and image.info.height
        spot = watermark.place(
            job.watermark,
            (image.info.width, image.info.height),
            (width, height),
            (frames[0].first, total),
            watermark.timeline_of(job),
            fps,
        )
    if text is not None:
        graph.chains.append(f"[vcat]{retime},{text[0]},format=yuv420p[vout]")
        graph.files.update(text[1])
    elif spot is None:
        graph.chains.append(f"[vcat]{retime},format=yuv420p[vout]")
    else:
        assert job.watermark is not None and job.watermark.image is not None
        k = graph.add_input(watermark.image_input(sources[job.watermark.image].location))
        graph.chains.append(f"[vcat]{retime}[vbase]")
        graph.chains += watermark.overlay_chains(
            spot, job.watermark.opacity, k, "[vbase]", "[vmarked]", total
        )
        graph.chains.append("[vmarked]format=yuv420p[vout]")
    check_needs(needs, sources, fps)
    duration = Fraction(total) / fps
    one_audio = one_audio_encode(job, audio_label is not None)
    vmain, audio_label, branches = split_outputs(
        job,
        graph.chains,
        "[vout]",
        audio_label,
        width,
        height,
        paths.renditions,
        split_audio=not one_audio,
    )
    args, files = command_args(graph, paths)
    encoders = 1 + sum(b.video is not None for b in branches)
    threads = shared_threads(settings.ffmpeg_threads, encoders, cores)
    if one_audio:
        assert audio_label is not None
        args += _tee_output(job, codec, fps, threads, vmain, audio_label, branches, paths)
    else:
        args += _separate_outputs(job, codec, fps, threads, vmain, audio_label, branches, paths)
    return Plan(
        mode="reencode",
        reason=reason,
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        want_audio=want_audio,
        mime_type=MIME[job.output.container],
        commands=[Command("encode", args, float(duration), files)],
        extra_outputs=[b.output for b in branches],
        preflight={
            **preflight,
            "path": "reencode",
            "reason": reason,
            "output": {
                "width": width,
                "height": height,
                "fps": rate_text(fps),
                "frames": total,
                "duration": round(float(duration), 6),
                "videoCodec": codec,
                "pieces": len(frames),
                "transitions": [
                    {"at": w.label, "type": w.kind, "frames": [w.first, w.stop]}
                    for w in layout.windows
                ],
                "watermark": text[2]
                if text is not None
                else None
                if spot is None
                else {
                    "box": [spot.x, spot.y, spot.width, spot.height],
                    "frames": [spot.first, spot.stop],
                },
                "inputs": len(graph.inputs),
                "exactReads": exact,
            },
            "renditions": [
                {"name": b.output.name, "width": b.output.width, "height": b.output.height}
                for b in branches
            ],
        },
    )
