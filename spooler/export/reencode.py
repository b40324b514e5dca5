"""The reencode plan: ONE ffmpeg pass whose filter graph cuts, normalises and joins.

Each piece of the edit gets its own branch:
  trim -> setpts (piece time 0 = its first output frame) -> fps (each output frame shows
  the last source frame whose time rounds to it or earlier: the nearest, or the previous
  one held where a variable-rate source misses frames) -> tpad/trim (exactly N frames)
  -> scale + pad|crop -> setsar
and the branches are concatenated, then stamped with exact constant-rate timestamps.
Each angle is ONE input, an ffconcat list of just its pieces (ffconcat.py): one decoder
per angle whatever the number of cuts, and only what is shown gets decoded (plus a GOP
before and a little after each piece).

Audio (also used by the copy plan) is cut once per span in samples from absolute times,
resampled to 48 kHz stereo, padded/trimmed to the exact sample count.

Up to the final [vout]/[aout] labels, three stages may join in, each in its own module:
transitions.py (windows around cuts: the branches become "reads" composed into the
concat's "parts"), watermark.py or textmark.py (an overlay or drawtext after the concat)
and audiomix.py (an angle's ambient sound under the external mic; loudness normalisation
of the finished track).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import audiomix, textmark, transitions, watermark
from spooler.export.commands import (
    MIME,
    MUXERS,
    Command,
    Plan,
    PlanPaths,
    fmt,
    rate_text,
)
from spooler.export.deliverables import Rendition
from spooler.export.ffconcat import ConcatList, concat_input
from spooler.export.models import ExportJob, ExternalAudio, FollowAudio, NoAudio
from spooler.export.output import ExactSize, HeightSize, nominal_rate
from spooler.export.renditions import muxer_args, split_outputs
from spooler.export.sources import Need, Source, audio_spans, check_coverage
from spooler.export.timeline import FramePiece, Piece
from spooler.ffmpeg import encoder_threads

POSTROLL = Fraction(1, 5)  # seconds read past a stretch beyond the file's interleave lead
SAMPLE_RATE = 48_000
FADE_SAMPLES = 240  # 5 ms at 48 kHz: fades at follow-audio cuts so they never click
GRAPH_INLINE_LIMIT = 60_000  # longer graphs go to a file (one argv string must stay < 128 KiB)
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
DEFAULT_CRF = {"h264": 20, "hevc": 24, "vp9": 32, "av1": 35}
DEFAULT_PRESET = {"h264": "medium", "hevc": "medium", "vp9": "4", "av1": "8"}


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


def _samples(t: Fraction) -> int:
    return math.floor(t * SAMPLE_RATE + Fraction(1, 2))


@dataclass(frozen=True)
class Span:
    """A stretch of output on one angle: timeline [start, end)."""

    angle: str
    start: Fraction
    end: Fraction
    label: str


class Graph:
    """Collects the inputs, filter chains and list files of one ffmpeg command."""

    def __init__(self) -> None:
        self.inputs: list[list[str]] = []
        self.chains: list[str] = []
        self.files: dict[Path, str] = {}

    def add_input(self, args: list[str]) -> int:
        self.inputs.append(args)
        return len(self.inputs) - 1

    def add_list(self, concat: ConcatList, list_path: Path) -> int:
        """The list becomes an input (written to `list_path` before ffmpeg runs)."""
        self.files[list_path] = concat.text()
        return self.add_input(concat_input(list_path))


def piece_inputs(
    job: ExportJob,
    sources: dict[str, Source],
    graph: Graph,
    spans: list[Span],
    list_paths: list[Path],
    margin: Callable[[Source], Fraction],
    *,
    video: bool,
    audio: bool,
) -> tuple[list[str], list[str], list[Fraction]]:
    """One ffconcat input per angle holding its spans; split to one branch per span.

    Returns each span's video and audio pad labels and its base (graph time = source
    time - base). Each stretch starts `margin` early and ends past the span by the file's
    measured interleave lead + POSTROLL: an entry ends at the first packet of ANY stream
    past its outpoint, and audio chunks may sit ahead of the video in the file.
    """
    lists: dict[str, ConcatList] = {}
    bases: list[Fraction] = []
    for span in spans:
        angle = job.angle(span.angle)
        source = sources[angle.source]
        if span.angle not in lists:
            # A seek lands at most one GOP early; one keyframe only: the whole file.
            gop = source.index.keyframe_max_gap() if source.index else None
            longest = Fraction(gop if gop is not None else source.video_end)
            lists[span.angle] = ConcatList(
                source.read_path, Fraction(source.info.start_time), longest + 1
            )
        src_start = span.start + Fraction(angle.sync_offset)
        m = margin(source)
        src_end = src_start + span.end - span.start
        lead = Fraction(source.index.interleave_lead if source.index else 1.0)
        bases.append(lists[span.angle].add(src_start - m, src_end + m + lead + POSTROLL))
    pads: dict[str, tuple[list[str], list[str]]] = {}
    for angle_id, concat in lists.items():
        k = graph.add_list(concat, list_paths[len(pads)])
        count = sum(span.angle == angle_id for span in spans)
        vpads = [f"[i{k}v{j}]" for j in range(count)] if video else []
        apads = [f"[i{k}a{j}]" for j in range(count)] if audio else []
        if video:
            graph.chains.append(f"[{k}:v:0]split={count}{''.join(vpads)}")
        if audio:
            graph.chains.append(f"[{k}:a:0]asplit={count}{''.join(apads)}")
        pads[angle_id] = (vpads, apads)
    vlabels = [pads[span.angle][0].pop(0) for span in spans] if video else []
    alabels = [pads[span.angle][1].pop(0) for span in spans] if audio else []
    return vlabels, alabels, bases


def _audio_chain(start: Fraction, samples: int, gain_db: float, fades: bool) -> str:
    """From graph time `start` on: exactly `samples` samples of 48 kHz stereo."""
    chain = [
        f"atrim=start={fmt(max(Fraction(0), start))}",
        "asetpts=PTS-STARTPTS",
        f"aresample={SAMPLE_RATE}",
        "aformat=sample_fmts=fltp:channel_layouts=stereo",
    ]
    if gain_db:
        chain.append(f"volume={gain_db:g}dB")
    chain += [f"apad=whole_len={samples}", f"atrim=end_sample={samples}"]
    if fades and samples > 2 * FADE_SAMPLES:
        chain += [
            f"afade=t=in:ss=0:ns={FADE_SAMPLES}",
            f"afade=t=out:ss={samples - FADE_SAMPLES}:ns={FADE_SAMPLES}",
        ]
    return ",".join(chain)


def audio_bed(
    job: ExportJob,
    sources: dict[str, Source],
    graph: Graph,
    start: Fraction,
    end: Fraction,
    needs: list[Need],
    list_paths: tuple[Path, ...],
) -> str:
    """The continuous audio track (an angle's or an external file's, perhaps with an angle's
    ambient sound mixed under it), cut once, then loudness-normalised if asked."""
    if isinstance(job.audio, ExternalAudio):
        name, offset, gain, who = (
            job.audio.source,
            Fraction(job.audio.offset),
            job.audio.gain_db,
            "audio",
        )
    else:
        angle = job.audio_angle
        assert angle is not None
        name, offset, gain, who = (
            job.angle(angle).source,
            Fraction(job.angle(angle).sync_offset),
            0.0,
            angle,
        )
    total = _samples(end) - _samples(start)
    tracks = [_bed_track(sources, graph, (name, offset, gain), start, end, list_paths[0])]
    needs.append(Need("audio", who, name, offset, start, end, audio=True))
    ambient = job.audio.ambient if isinstance(job.audio, ExternalAudio) else None
    if ambient is not None:
        under = job.angle(ambient.angle)
        offset = Fraction(under.sync_offset)
        needs.append(
            Need("audio.ambient", ambient.angle, under.source, offset, start, end, audio=True)
        )
        track = (under.source, offset, ambient.gain_db)
        tracks.append(_bed_track(sources, graph, track, start, end, list_paths[1]))
    loudness = audiomix.loudness_chain(job, total)
    if len(tracks) == 1:
        graph.chains.append(f"{tracks[0]}{loudness}[aout]")
    else:
        graph.chains += [f"{tracks[0]}[mic]", f"{tracks[1]}[ambient]"]
        graph.chains.append(f"{audiomix.mix_chain('[mic]', '[ambient]')}{loudness}[aout]")
    return "[aout]"


def _bed_track(
    sources: dict[str, Source],
    graph: Graph,
    track: tuple[str, Fraction, float],
    start: Fraction,
    end: Fraction,
    list_path: Path,
) -> str:
    """One file's audio over timeline [start, end): its input and chain (no output label)."""
    name, offset, gain = track
    src_start = start + offset
    source = sources[name]
    concat = ConcatList(source.read_path, Fraction(source.info.start_time), Fraction(0))
    lead = Fraction(source.index.interleave_lead if source.index else 1.0)
    base = concat.add(src_start - 1, src_start + end - start + lead + POSTROLL)
    k = graph.add_list(concat, list_path)
    total = _samples(end) - _samples(start)
    return f"[{k}:a:0]{_audio_chain(src_start - base, total, gain, False)}"


def audio_encoder(job: ExportJob | Rendition) -> list[str]:
    out = job.output if isinstance(job, ExportJob) else job
    bitrate = f"{out.audio_bitrate_kbps}k"
    if out.audio_codec_value == "opus":
        return ["-c:a", "libopus", "-b:a", bitrate, "-ar", str(SAMPLE_RATE)]
    return ["-c:a", "aac", "-b:a", bitrate, "-ar", str(SAMPLE_RATE)]


def _video_encoder(
    job: ExportJob | Rendition, codec: str, fps: Fraction, threads: int
) -> list[str]:
    out = job.output if isinstance(job, ExportJob) else job
    container = job.output.container if isinstance(job, ExportJob) else job.container_value
    args = ["-c:v", ENCODERS[codec]]
    preset = out.preset or DEFAULT_PRESET[codec]
    if out.video_bitrate_kbps is not None:
        quality = ["-b:v", f"{out.video_bitrate_kbps}k"]
    else:
        crf = out.crf if out.crf is not None else DEFAULT_CRF[codec]
        quality = ["-crf", str(crf)] + (["-b:v", "0"] if codec == "vp9" else [])
    if codec in ("h264", "hevc"):
        args += ["-preset", preset, *quality]
        if codec == "hevc":
            args += ["-x265-params", "log-level=error"]
            if container in ("mp4", "mov"):
                args += ["-tag:v", "hvc1"]  # Apple players and Safari need hvc1
    elif codec == "vp9":
        args += ["-deadline", "good", "-cpu-used", preset, "-row-mt", "1", *quality]
    else:
        args += ["-preset", preset, *quality]
    return [
        *args,
        "-pix_fmt",
        "yuv420p",
        "-r",
        rate_text(fps),
        "-fps_mode",
        "cfr",
        *encoder_threads(threads),
    ]


def _container_args(job: ExportJob, path: Path) -> list[str]:
    args = []
    if job.output.faststart and job.output.container in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    return [*args, "-f", MUXERS[job.output.container], f"file:{path}"]


def command_args(graph: Graph, paths: PlanPaths) -> tuple[list[str], dict[Path, str]]:
    """-copyts, the inputs and the filter graph; the files to write before running."""
    text = ";\n".join(graph.chains)
    inputs = [arg for group in graph.inputs for arg in group]
    # -copyts: graph time = each list's own timeline, which the plan computed exactly.
    if len(text) <= GRAPH_INLINE_LIMIT:
        return ["-copyts", *inputs, "-filter_complex", text], dict(graph.files)
    # ffmpeg >= 7 reads an option's value from a file with the "-/" prefix.
    return (
        ["-copyts", *inputs, "-/filter_complex", str(paths.graph)],
        {**graph.files, paths.graph: text},
    )


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

    vin, ain, bases = piece_inputs(
        job, sources, graph, spans, list(paths.lists), margin, video=True, audio=follow
    )
    video_labels: list[str] = []
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
        seek = max(Fraction(0), src_start - margin(source))
        src_end = src_start + span.end - span.start + margin(source)
        chain = [
            f"trim=start={fmt(seek - bases[i])}:end={fmt(src_end - bases[i])}",
            f"setpts=PTS-{fmt(src_start - bases[i])}/TB",
            f"fps=fps={rate_text(fps)}:start_time=0:round=near",
            # A source a hair short still fills its last frames; more would hide a real
            # shortfall, which verification then reports as a short output.
            "tpad=stop=2:stop_mode=clone",
            f"trim=end_frame={piece.frames}",
            _normalise(source, width, height, fit),
        ]
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
        alabels_follow = follow_labels(job, graph, spans, ain, bases, fades=layout.plain)
        if not layout.plain:
            alabels_follow = transitions.compose_audio(
                graph.chains,
                layout,
                alabels_follow,
                lambda frame: _samples(Fraction(frame) / fps),
                FADE_SAMPLES,
            )
        pairs = "".join(v + a for v, a in zip(video_labels, alabels_follow, strict=True))
        graph.chains.append(f"{pairs}concat=n={parts}:v=1:a=1[vcat][acat]")
        loudness = audiomix.loudness_chain(job, _samples(end) - _samples(start))
        graph.chains.append(f"[acat]asetpts=N/SR/TB{loudness}[aout]")
        audio_label: str | None = "[aout]"
    else:
        graph.chains.append(f"{''.join(video_labels)}concat=n={parts}:v=1:a=0[vcat]")
        bed_lists = paths.lists[len(graph.inputs) :]
        audio_label = (
            audio_bed(job, sources, graph, start, end, needs, bed_lists) if want_audio else None
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
        k = graph.add_input(watermark.image_input(sources[job.watermark.image].read_path))
        graph.chains.append(f"[vcat]{retime}[vbase]")
        graph.chains += watermark.overlay_chains(
            spot, job.watermark.opacity, k, "[vbase]", "[vmarked]", total
        )
        graph.chains.append("[vmarked]format=yuv420p[vout]")
    check_needs(needs, sources, fps)
    duration = Fraction(total) / fps
    vmain, audio_label, branches = split_outputs(
        job, graph.chains, "[vout]", audio_label, width, height, paths.renditions
    )
    args, files = command_args(graph, paths)
    args += ["-map", vmain, *_video_encoder(job, codec, fps, settings.ffmpeg_threads)]
    if audio_label:
        args += ["-map", audio_label, *audio_encoder(job)]
    args += ["-map_metadata", "-1", *_container_args(job, paths.output)]
    for branch in branches:  # each rendition: its own encoders and file, same command
        r = branch.rendition
        if branch.video:
            threads = settings.ffmpeg_threads
            args += ["-map", branch.video, *_video_encoder(r, r.video_codec, fps, threads)]
        if branch.audio:
            args += ["-map", branch.audio, *audio_encoder(r)]
        args += muxer_args(r, branch.output.temp)
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
            },
            "renditions": [
                {"name": b.output.name, "width": b.output.width, "height": b.output.height}
                for b in branches
            ],
        },
    )


def follow_labels(
    job: ExportJob,
    graph: Graph,
    spans: list[Span],
    audio_inputs: list[str],
    bases: list[Fraction],
    *,
    fades: bool = True,
) -> list[str]:
    """Each span's own audio, exactly its samples; 5 ms fades at both ends with `fades`."""
    labels = []
    for i, span in enumerate(spans):
        offset = Fraction(job.angle(span.angle).sync_offset)
        samples = _samples(span.end) - _samples(span.start)
        chain = _audio_chain(span.start + offset - bases[i], samples, 0.0, fades)
        graph.chains.append(f"{audio_inputs[i]}{chain}[a{i}]")
        labels.append(f"[a{i}]")
    return labels


def check_needs(needs: list[Need], sources: dict[str, Source], fps: Fraction) -> None:
    ends = {name: (s.video_end if s.index else s.info.duration) for name, s in sources.items()}
    check_coverage(needs, ends, slack=float(1 / fps) / 2, audio=audio_spans(sources))


# --- copy --------------------------------------------------------------------------------
