"""Probing media with PyAV (libavformat in-process; the ffmpeg wheel ships no ffprobe).

The shell side: opening files. What a probe finds is plain data in spooler.mediainfo.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from spooler.errors import ErrorCode, JobError
from spooler.h264 import AvcConfig, is_idr

# The data types live in the pure mediainfo module (planners import them without PyAV);
# re-exported here under their old home.
from spooler.mediainfo import DEMUXERS as DEMUXERS
from spooler.mediainfo import FORMAT_WHITELIST as FORMAT_WHITELIST
from spooler.mediainfo import OPEN_OPTIONS as OPEN_OPTIONS
from spooler.mediainfo import PROTOCOLS as PROTOCOLS
from spooler.mediainfo import AudioSpan as AudioSpan
from spooler.mediainfo import MediaInfo as MediaInfo
from spooler.mediainfo import MediaLocation, is_mov, open_options, reader_url
from spooler.mediainfo import VideoIndex as VideoIndex
from spooler.mediainfo import VideoPacket as VideoPacket


def probe(path: MediaLocation, *, decode: bool = False, name: str | None = None) -> MediaInfo:
    """Read container and stream facts; raise JobError(source_unreadable) if it cannot.

    `decode=True` also decodes the first video frame: it proves the stream decodes and
    gives the rotation of phone video (a display matrix the decoder applies to frames).
    `name` is what messages call the file (default: its file name). A format outside
    DEMUXERS fails like unreadable media: libavformat refuses it before reading its header.
    """
    shown = name or path.name
    try:
        with av.open(reader_url(path), options=open_options(path)) as container:
            info = _describe(container)
            if decode and info.has_video:
                frame = next(container.decode(video=0), None)
                if frame is None:
                    raise ValueError("no video frame could be decoded")
                info = replace(info, rotation=int(getattr(frame, "rotation", 0) or 0) % 360)
            return info
    except FileNotFoundError as exc:
        raise JobError(ErrorCode.SOURCE_MISSING, f"{shown} does not exist") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise JobError(
            ErrorCode.SOURCE_UNREADABLE,
            f"{shown} cannot be read as media in an allowed format "
            f"({FORMAT_WHITELIST}): {_reason(exc)}",
            {"allowedFormats": list(DEMUXERS)},
        ) from exc


def open_demuxer(location: MediaLocation) -> Any:
    """A reader of packets only. An MP4/MOV's probe decodes no frame (mediainfo.
    NO_PROBE_DECODE: its sample tables give every timestamp); another container is opened
    again with the decode, which some need for their packets' timestamps (Matroska's decode
    times, MPEG-TS's audio parameters)."""
    container = av.open(reader_url(location), options=open_options(location, decode=False))
    if is_mov(container.format.name):
        return container
    container.close()
    return av.open(reader_url(location), options=open_options(location))


def _reason(exc: BaseException) -> str:
    """libav's reason without the URL (which may be a /proc/self/fd path)."""
    reason = getattr(exc, "strerror", None)
    return str(reason) if reason else str(exc) or type(exc).__name__


def _origin(container: Any) -> float:
    """The container's start time in seconds: ffmpeg subtracts it from every input."""
    return float(container.start_time / av.time_base) if container.start_time else 0.0


def _describe(container: Any) -> MediaInfo:
    duration = float(container.duration / av.time_base) if container.duration else 0.0
    fields: dict[str, Any] = {
        "duration": duration,
        "format_name": container.format.name,
        "start_time": _origin(container),
    }
    if container.streams.video:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        fields.update(
            video_codec=ctx.codec.canonical_name,
            width=ctx.width,
            height=ctx.height,
            fps=Fraction(rate) if rate else None,
            time_base=Fraction(stream.time_base) if stream.time_base else None,
            pix_fmt=ctx.format.name if ctx.format else None,
            sar=Fraction(stream.sample_aspect_ratio) if stream.sample_aspect_ratio else Fraction(1),
            extradata=bytes(ctx.extradata) if ctx.extradata else None,
            profile=ctx.profile,
            level=ctx.level if ctx.level and ctx.level > 0 else None,
            colour=(
                int(ctx.color_primaries),
                int(ctx.color_trc),
                int(ctx.colorspace),
                int(ctx.color_range),
            ),
        )
        if stream.duration and stream.time_base and not duration:
            fields["duration"] = float(stream.duration * stream.time_base)
    if container.streams.audio:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        fields.update(
            audio_codec=ctx.codec.canonical_name,
            sample_rate=ctx.sample_rate,
            channels=ctx.channels if hasattr(ctx, "channels") else ctx.layout.nb_channels,
        )
    return MediaInfo(**fields)


def verify_media(
    path: Path,
    *,
    expected_seconds: float,
    tolerance: float,
    want_audio: bool,
    want_video: bool = True,
    size: tuple[int, int] | None = None,
    name: str = "output",
) -> MediaInfo:
    """The one check of a finished temporary output before it is published: it reads back,
    has the planned streams (and frame size); its video (or, audio only, its audio) lasts
    `expected_seconds`, and audio ends with video, within `tolerance`. Stream ends are
    demuxed (stream_ends): container durations can lie. One frame is decoded for the
    display rotation a stream copy keeps, so that `display_size` is the size shown."""
    try:
        info = probe(path, decode=want_video)
    except JobError as exc:
        raise JobError(
            ErrorCode.VERIFY_FAILED, f"{name}: cannot be read back: {exc.message}"
        ) from exc
    ends = stream_ends(path)
    problems: list[str] = []
    main_end = ends.video_end if want_video else ends.audio_end
    if want_video and ends.video_end is None:
        problems.append("no video stream")
    elif not want_video and ends.video_end is not None:
        problems.append("unexpected video stream")
    if want_audio and ends.audio_end is None:
        problems.append("no audio stream")
    elif not want_audio and ends.audio_end is not None:
        problems.append("unexpected audio stream")
    if main_end is not None and abs(main_end - expected_seconds) > tolerance:
        which = "video" if want_video else "audio"
        problems.append(
            f"{which} lasts {main_end:.3f} s, expected {expected_seconds:.3f} s ± {tolerance:.3f}"
        )
    if (
        want_video
        and want_audio
        and ends.video_end is not None
        and ends.audio_end is not None
        and abs(ends.audio_end - ends.video_end) > tolerance
    ):
        problems.append(f"audio ends at {ends.audio_end:.3f} s but video at {ends.video_end:.3f} s")
    if size is not None and info.display_size is not None and info.display_size != size:
        shown = info.display_size
        problems.append(f"frame is {shown[0]}x{shown[1]}, expected {size[0]}x{size[1]}")
    if problems:
        raise JobError(
            ErrorCode.VERIFY_FAILED,
            f"{name} failed verification: " + "; ".join(problems),
            {
                "probe": info.summary(),
                "videoEnd": ends.video_end,
                "audioEnd": ends.audio_end,
                "expected": expected_seconds,
            },
        )
    return info


# Packets a demuxer may yield without a decode time while its reorder buffer fills (a
# B-frame stream's delay: at most 16 frames in libavformat); more is a stream we cannot copy.
MAX_UNTIMED = 16


def frame_step(stream: Any) -> int:
    """One frame's duration in the stream's time base (1 if its rate is unknown)."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate or stream.time_base is None:
        return 1
    return max(1, round(1 / (Fraction(rate) * Fraction(stream.time_base))))


def with_decode_times(packets: Iterable[Any], step: int) -> Iterator[Any]:
    """The packets that have a presentation time, each with a decode time. Matroska stores
    none: libavformat derives them from the presentation times once its reorder buffer has
    filled, so the first packets of a B-frame stream (at the file's start, and after each
    seek) come without. Each gets the first derived time minus one frame (`step`) for each
    packet between them, as an MP4 stores them (never past its own presentation time)."""
    pending: list[Any] = []
    for packet in packets:
        if packet.pts is None:
            continue
        if packet.dts is None:
            if len(pending) >= MAX_UNTIMED:
                raise ValueError(f"{MAX_UNTIMED} video packets in a row without a decode time")
            pending.append(packet)
            continue
        known = packet.dts
        for back, waiting in enumerate(reversed(pending), start=1):
            waiting.dts = min(waiting.pts, known - back * step)
        packet.dts = known
        yield from pending
        pending.clear()
        yield packet
    for waiting in pending:  # the stream ended first
        waiting.dts = waiting.pts
        yield waiting


def scan_video(path: MediaLocation, *, name: str | None = None) -> VideoIndex:
    """Demux (without decoding) every packet of the first video stream."""
    try:
        with av.open(reader_url(path), options=open_options(path)) as container:
            stream = container.streams.video[0]
            nal_length = nal_length_size(stream)
            packets = [
                VideoPacket(
                    packet.pts, packet.dts, packet.duration or 0, bool(packet.is_keyframe),
                    bool(packet.is_keyframe and nal_length and is_idr(bytes(packet), nal_length)),
                )
                for packet in with_decode_times(container.demux(stream), frame_step(stream))
            ]  # fmt: skip
            assert stream.time_base is not None
            origin = Fraction(container.start_time or 0, 1_000_000)
            lead = _interleave_lead(container, stream)
            return VideoIndex(Fraction(stream.time_base), origin, tuple(packets), lead)
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise JobError(
            ErrorCode.SOURCE_UNREADABLE,
            f"{name or path.name}: video packets cannot be read: {_reason(exc)}",
        ) from exc


def nal_length_size(stream: Any) -> int:
    """The NAL length prefix size of an H.264 stream stored as avcC, else 0."""
    ctx = stream.codec_context
    if ctx.codec.canonical_name != "h264" or not ctx.extradata:
        return 0
    try:
        return AvcConfig.parse(bytes(ctx.extradata)).length_size
    except ValueError:
        return 0


# How far into a file its interleaving is measured.
LEAD_WINDOW = 30.0


def _interleave_lead(container: Any, video: Any, window: float = LEAD_WINDOW) -> float:
    """The largest lead, in the first `window` seconds of the file, of any packet's time
    over the time of the video packets that come after it in file order."""
    container.seek(0, backward=True, any_frame=True)
    order: list[tuple[bool, float]] = []
    for packet in container.demux():
        if packet.dts is None or packet.time_base is None:
            continue
        at = float(packet.dts * packet.time_base)
        if at > window:
            break
        order.append((packet.stream.index == video.index, at))
    return lead_in_order(order)


def lead_in_order(order: list[tuple[bool, float]]) -> float:
    """The lead of packets listed in file order as (is video, dts seconds) (pure; shared
    with the index read from an MP4's tables, mp4index.py)."""
    lead, later_video = 0.0, float("inf")
    for is_video, at in reversed(order):
        if is_video:
            later_video = min(later_video, at)
        elif later_video != float("inf"):
            lead = max(lead, at - later_video)
    return lead


# How much of an audio stream's tail is demuxed to find its end (after one seek).
AUDIO_TAIL_SECONDS = 10.0


def scan_audio(path: MediaLocation, *, name: str | None = None) -> AudioSpan | None:
    """The first audio stream's own span (None without audio). The container's duration is
    the longest stream's, so a track that stops before the video needs its own end: the
    packets of its last AUDIO_TAIL_SECONDS (one seek from where the stream, else the file,
    says it ends), or of the whole stream when that finds nothing."""
    try:
        with av.open(reader_url(path), options=open_options(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.time_base is None:
                return None
            tb = Fraction(stream.time_base)
            origin = _origin(container)
            start = stream.start_time
            end = None
            # Where the stream says it ends, else the file (matroska has no stream duration).
            if stream.duration and start is not None:
                hint: int | None = start + stream.duration
            elif container.duration:
                hint = int(Fraction(container.duration, av.time_base) / tb)
            else:
                hint = None
            if hint is not None:
                tail = int(hint - AUDIO_TAIL_SECONDS / tb)
                container.seek(max(tail, 0), stream=stream, backward=True, any_frame=True)
                end = _last_end(container, stream)
            if end is None or start is None:
                container.seek(0, backward=True, any_frame=True)
                firsts: list[int] = []
                end = _last_end(container, stream, firsts)
                start = start if start is not None else (firsts[0] if firsts else None)
            if end is None or start is None:
                return None  # an audio stream without packets: no audio to cover anything
            return AudioSpan(float(start * tb) - origin, float(end * tb) - origin)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise JobError(
            ErrorCode.SOURCE_UNREADABLE,
            f"{name or path.name}: audio packets cannot be read: {_reason(exc)}",
        ) from exc


def _last_end(container: Any, stream: Any, firsts: list[int] | None = None) -> int | None:
    """The largest pts + duration of `stream`'s packets from the current position on."""
    end: int | None = None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        if firsts is not None and not firsts:
            firsts.append(packet.pts)
        stop = packet.pts + (packet.duration or 0)
        end = stop if end is None else max(end, stop)
    return end


@dataclass(frozen=True)
class StreamEnds:
    """Where each stream of a file ends (last pts + duration), in seconds from its start."""

    video_end: float | None
    audio_end: float | None
    video_frames: int


def stream_ends(path: Path) -> StreamEnds:
    """Demux a whole file to find its real stream ends (container durations can lie)."""
    try:
        with open_demuxer(path) as container:
            streams = [s for s in (container.streams.video[:1] + container.streams.audio[:1])]
            # Time 0 as players count it: the streams' start times (edit lists applied),
            # not an AAC priming packet's negative timestamp.
            stream_starts = [
                float(st.start_time * st.time_base)
                for st in streams
                if st.start_time is not None and st.time_base is not None
            ]
            origin = min(stream_starts) if stream_starts else None
            # Each stream's first and last tick, in its own time base: integers in the loop
            # (a Fraction per packet cost ~10 us, a third of a second on a 5-minute file).
            first: dict[int, int] = {}
            last: dict[int, int] = {}
            counts: dict[int, int] = {}
            for packet in container.demux(streams):
                pts = packet.pts
                if pts is None:
                    continue
                i = packet.stream_index
                stop = pts + (packet.duration or 0)
                if i in last:
                    first[i] = min(first[i], pts)
                    last[i] = max(last[i], stop)
                    counts[i] += 1
                else:
                    first[i], last[i], counts[i] = pts, stop, 1
            ends: dict[str, float] = {}
            starts: dict[str, float] = {}
            frames = 0
            for stream in streams:
                if stream.index in last and stream.time_base is not None:
                    starts[stream.type] = float(first[stream.index] * stream.time_base)
                    ends[stream.type] = float(last[stream.index] * stream.time_base)
                    frames += counts[stream.index] if stream.type == "video" else 0
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise JobError(ErrorCode.VERIFY_FAILED, f"output cannot be read back: {exc}") from exc
    zero = origin if origin is not None else min(starts.values(), default=0.0)
    return StreamEnds(
        ends["video"] - zero if "video" in ends else None,
        ends["audio"] - zero if "audio" in ends else None,
        frames,
    )
