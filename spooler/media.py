"""Probing media with PyAV (libavformat in-process; the ffmpeg wheel ships no ffprobe)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from spooler.errors import ErrorCode, JobError
from spooler.h264 import AvcConfig, is_idr

# Only plain files: never let a name like "concat:a|b" or "http://..." reach a protocol.
PROTOCOLS = "file"
# The demuxers a source (or our own output) may be read with: what cameras, phones and
# audio recorders write. Demuxers that open OTHER files or URLs named inside the file
# (concat, hls, dash, image2 patterns, ffmetadata, ...) are left out, so a playlist or an
# ffconcat script renamed to cam.mp4 is refused instead of followed. libavformat matches
# any name of a demuxer ("mov" covers "mov,mp4,m4a,3gp,3g2,mj2"; "matroska" covers webm).
DEMUXERS = ("mov", "matroska", "mpegts", "mxf", "avi", "wav", "w64", "flac", "mp3", "aiff", "ogg")
FORMAT_WHITELIST = ",".join(DEMUXERS)
OPEN_OPTIONS = {"protocol_whitelist": PROTOCOLS, "format_whitelist": FORMAT_WHITELIST}


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    format_name: str
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: Fraction | None = None
    time_base: Fraction | None = None
    pix_fmt: str | None = None
    rotation: int = 0
    sar: Fraction = Fraction(1)
    start_time: float = 0.0
    extradata: bytes | None = None
    profile: str | None = None
    level: int | None = None
    # (primaries, transfer, matrix, range) as libavutil's enum values; 2 / 0 = unspecified.
    colour: tuple[int, int, int, int] = (2, 2, 2, 0)
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None

    @property
    def display_size(self) -> tuple[int, int] | None:
        """Width and height as shown: rotation by 90/270 swaps them."""
        if self.width is None or self.height is None:
            return None
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def summary(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 6),
            "format": self.format_name,
            "videoCodec": self.video_codec,
            "width": self.width,
            "height": self.height,
            "fps": float(self.fps) if self.fps else None,
            "timeBase": str(self.time_base) if self.time_base else None,
            "pixFmt": self.pix_fmt,
            "rotation": self.rotation,
            "sar": str(self.sar),
            "audioCodec": self.audio_codec,
            "sampleRate": self.sample_rate,
            "channels": self.channels,
        }


def probe(path: Path, *, decode: bool = False, name: str | None = None) -> MediaInfo:
    """Read container and stream facts; raise JobError(source_unreadable) if it cannot.

    `decode=True` also decodes the first video frame: it proves the stream decodes and
    gives the rotation of phone video (a display matrix the decoder applies to frames).
    `name` is what messages call the file (default: its file name). A format outside
    DEMUXERS fails like unreadable media: libavformat refuses it before reading its header.
    """
    shown = name or path.name
    try:
        with av.open(f"file:{path}", options=OPEN_OPTIONS) as container:
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


def verify_output(
    path: Path,
    *,
    expected_seconds: float,
    tolerance: float,
    want_audio: bool,
    want_video: bool = True,
) -> MediaInfo:
    """Probe a finished temporary output before it is published."""
    try:
        info = probe(path)
    except JobError as exc:
        raise JobError(
            ErrorCode.VERIFY_FAILED, f"output cannot be read back: {exc.message}"
        ) from exc
    problems: list[str] = []
    if want_video and not info.has_video:
        problems.append("no video stream")
    if want_audio and not info.has_audio:
        problems.append("no audio stream")
    if abs(info.duration - expected_seconds) > tolerance:
        problems.append(
            f"duration {info.duration:.3f} s, expected {expected_seconds:.3f} s ± {tolerance:.3f}"
        )
    if problems:
        raise JobError(
            ErrorCode.VERIFY_FAILED,
            "output failed verification: " + "; ".join(problems),
            {"probe": info.summary()},
        )
    return info


@dataclass(frozen=True)
class VideoPacket:
    """One video packet in decode order, timestamps in the stream's time base."""

    pts: int
    dts: int
    duration: int
    keyframe: bool
    idr: bool = False  # H.264 only: the keyframe holds an IDR slice (decoding starts afresh)


@dataclass(frozen=True)
class VideoIndex:
    """Every video packet's timestamps (demuxed, not decoded): keyframes and clean cuts."""

    time_base: Fraction
    origin: Fraction  # the container's start time: source time 0, as ffmpeg -i counts it
    packets: tuple[VideoPacket, ...]
    # How far (s) other streams' packets run ahead of the video in file order: a reader
    # that stops at the first packet past a time must read this much further.
    interleave_lead: float = 0.0

    def time(self, pts: int) -> Fraction:
        """Exact source time of a timestamp."""
        return pts * self.time_base - self.origin

    def seconds(self, pts: int) -> float:
        return float(self.time(pts))

    @property
    def end_pts(self) -> int:
        return max((p.pts + p.duration for p in self.packets), default=0)

    @property
    def duration(self) -> float:
        return self.seconds(self.end_pts)

    def heads(self) -> list[int]:
        """Indices of keyframes a stream copy can start at: no packet after one in decode
        order is shown before it (open-GOP leading pictures would not decode)."""
        suffix_min = self._suffix_min()
        return [
            i for i, p in enumerate(self.packets)
            if p.keyframe and (i + 1 >= len(self.packets) or suffix_min[i + 1] >= p.pts)
        ]  # fmt: skip

    def tails(self) -> list[int]:
        """Indices i where a stream copy can stop before packet i: every packet before i in
        decode order is shown before every packet from i on (no B-frame loses a reference
        and no extra frame is shown)."""
        suffix_min = self._suffix_min()
        out: list[int] = []
        prefix_max: int | None = None
        for i, p in enumerate(self.packets):
            if prefix_max is not None and prefix_max < suffix_min[i]:
                out.append(i)
            prefix_max = p.pts if prefix_max is None else max(prefix_max, p.pts)
        out.append(len(self.packets))
        return out

    def keyframe_interval(self) -> float | None:
        keys = [p.pts for p in self.packets if p.keyframe]
        if len(keys) < 2:
            return None
        keys.sort()
        return float((keys[-1] - keys[0]) * self.time_base) / (len(keys) - 1)

    def keyframe_max_gap(self) -> float | None:
        """The longest stretch between keyframes: how far back a seek may land."""
        keys = sorted(p.pts for p in self.packets if p.keyframe)
        if len(keys) < 2:
            return None
        return float(max(b - a for a, b in itertools.pairwise(keys)) * self.time_base)

    def _suffix_min(self) -> list[int]:
        out = [0] * len(self.packets)
        low: int | None = None
        for i in range(len(self.packets) - 1, -1, -1):
            pts = self.packets[i].pts
            low = pts if low is None else min(low, pts)
            out[i] = low
        return out


def scan_video(path: Path, *, name: str | None = None) -> VideoIndex:
    """Demux (without decoding) every packet of the first video stream."""
    try:
        with av.open(f"file:{path}", options=OPEN_OPTIONS) as container:
            stream = container.streams.video[0]
            nal_length = _nal_length_size(stream)
            packets = [
                VideoPacket(
                    packet.pts, packet.dts if packet.dts is not None else packet.pts,
                    packet.duration or 0, bool(packet.is_keyframe),
                    bool(packet.is_keyframe and nal_length and is_idr(bytes(packet), nal_length)),
                )
                for packet in container.demux(stream)
                if packet.pts is not None
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


def _nal_length_size(stream: Any) -> int:
    """The NAL length prefix size of an H.264 stream stored as avcC, else 0."""
    ctx = stream.codec_context
    if ctx.codec.canonical_name != "h264" or not ctx.extradata:
        return 0
    try:
        return AvcConfig.parse(bytes(ctx.extradata)).length_size
    except ValueError:
        return 0


def _interleave_lead(container: Any, video: Any, window: float = 30.0) -> float:
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
    lead, later_video = 0.0, float("inf")
    for is_video, at in reversed(order):
        if is_video:
            later_video = min(later_video, at)
        elif later_video != float("inf"):
            lead = max(lead, at - later_video)
    return lead


@dataclass(frozen=True)
class AudioSpan:
    """Where a file's first audio stream starts and ends: seconds of source time as
    `ffmpeg -i` counts it (the container's start time subtracted), from its packets."""

    start: float
    end: float


# How much of an audio stream's tail is demuxed to find its end (after one seek).
AUDIO_TAIL_SECONDS = 10.0


def scan_audio(path: Path, *, name: str | None = None) -> AudioSpan | None:
    """The first audio stream's own span (None without audio). The container's duration is
    the longest stream's, so a track that stops before the video needs its own end: the
    packets of its last AUDIO_TAIL_SECONDS (one seek from where the stream, else the file,
    says it ends), or of the whole stream when that finds nothing."""
    try:
        with av.open(f"file:{path}", options=OPEN_OPTIONS) as container:
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
        with av.open(f"file:{path}", options=OPEN_OPTIONS) as container:
            streams = [s for s in (container.streams.video[:1] + container.streams.audio[:1])]
            # Time 0 as players count it: the streams' start times (edit lists applied),
            # not an AAC priming packet's negative timestamp.
            stream_starts = [
                float(st.start_time * st.time_base)
                for st in streams
                if st.start_time is not None and st.time_base is not None
            ]
            origin = min(stream_starts) if stream_starts else None
            ends: dict[str, float] = {}
            starts: dict[str, float] = {}
            frames = 0
            for packet in container.demux(streams):
                if packet.pts is None or packet.time_base is None:
                    continue
                kind = packet.stream.type
                begin = float(packet.pts * packet.time_base)
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                starts[kind] = min(starts.get(kind, begin), begin)
                ends[kind] = max(ends.get(kind, end), end)
                frames += kind == "video"
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise JobError(ErrorCode.VERIFY_FAILED, f"output cannot be read back: {exc}") from exc
    zero = origin if origin is not None else min(starts.values(), default=0.0)
    return StreamEnds(
        ends["video"] - zero if "video" in ends else None,
        ends["audio"] - zero if "audio" in ends else None,
        frames,
    )
