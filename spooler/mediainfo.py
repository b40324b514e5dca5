"""What probing a media file finds, as plain data: stream facts and the video packet index.

Pure (no PyAV, no files): the planners read these types, spooler.media fills them in.
Also the demuxer and protocol whitelists, which every reader of a source applies.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

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
# Added for a reader of an MP4/MOV that only demuxes: libavformat's probe then decodes no
# frame, which it would only to learn a pixel or sample format that this demuxer does not
# need (its sample tables give every timestamp; a 1080p H.264 keyframe: ~20 ms; issue 18).
# Not for other containers: Matroska's decode times and MPEG-TS's audio parameters come
# from that decode (media.open_demuxer). PyAV passes a container's options to each
# stream's probe decoder too; the refusal goes to PyAV's log, which is off.
NO_PROBE_DECODE = {"codec_whitelist": "none"}
DEMUX_OPTIONS = {**OPEN_OPTIONS, **NO_PROBE_DECODE}
# A remote source is read through the daemon's loopback gateway (spooler/s3/gateway.py):
# plain http over tcp to 127.0.0.1, nothing else (no tls, no file).
REMOTE_PROTOCOLS = "http,tcp"


def is_mov(format_name: str) -> bool:
    """libavformat's MP4/MOV demuxer ("mov,mp4,m4a,3gp,3g2,mj2")."""
    return format_name.split(",")[0] == "mov"


@dataclass(frozen=True)
class RemoteMedia:
    """A remote source as its readers see it: the gateway's loopback URL (an opaque token,
    no secret) and the name that may be shown (never a URL's query or signature)."""

    url: str
    shown: str

    @property
    def name(self) -> str:
        return self.shown

    def __str__(self) -> str:
        return self.url


# Where a reader opens a source: a local file (in practice /proc/self/fd/N) or a remote one.
MediaLocation = Path | RemoteMedia


def reader_url(location: MediaLocation) -> str:
    """What libavformat opens: `file:<path>` (never a bare string that could name a
    protocol), or the gateway's http URL."""
    return location.url if isinstance(location, RemoteMedia) else f"file:{location}"


def reader_protocols(location: MediaLocation) -> str:
    """The protocol whitelist of that reader: `file`, or `http,tcp` for the gateway."""
    return REMOTE_PROTOCOLS if isinstance(location, RemoteMedia) else PROTOCOLS


def open_options(location: MediaLocation, *, decode: bool = True) -> dict[str, str]:
    """PyAV's open options for a source: its protocols and the demuxer allow-list;
    `decode=False` for a reader of an MP4/MOV that only demuxes (NO_PROBE_DECODE)."""
    options = {
        "protocol_whitelist": reader_protocols(location),
        "format_whitelist": FORMAT_WHITELIST,
    }
    return options if decode else {**options, **NO_PROBE_DECODE}


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


@dataclass(frozen=True)
class AudioSpan:
    """Where a file's first audio stream starts and ends: seconds of source time as
    `ffmpeg -i` counts it (the container's start time subtracted), from its packets
    (media.scan_audio): a file lasts as its longest stream, its audio may stop earlier."""

    start: float
    end: float


@dataclass(frozen=True)
class VideoPacket:
    """One video packet in decode order, timestamps in the stream's time base."""

    pts: int
    dts: int
    duration: int
    keyframe: bool
    idr: bool = False  # H.264 only: the keyframe holds an IDR slice (decoding starts afresh)
    # Where its sample lies in the file: known from an MP4's sample tables (mp4index), -1
    # from a scan (a demuxer's packet position is not the sample's own in every container).
    pos: int = field(default=-1, compare=False)
    size: int = field(default=0, compare=False)


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

    def decode_lag(self) -> Fraction:
        """How far (s) a packet's decode time can run past its presentation time: 0 unless
        the file stores negative composition offsets. A reader that stops at the first
        packet past a time reads this much further to have every frame shown before it."""
        return self._decode_ticks[1] * self.time_base

    def last_needed_decode(self, end: Fraction) -> Fraction | None:
        """The decode time (source time) of the last packet, in decode order, of a frame
        shown before `end`: decoding up to it, and no further, shows every frame before
        `end` (a packet decoded earlier but shown later comes before it). None when no
        frame is shown before `end`."""
        limit = (end + self.origin) / self.time_base  # in ticks
        decode_ticks, lag = self._decode_ticks
        # A packet shown before `end` is decoded before end + lag: it lies before `first`.
        first = bisect.bisect_left(decode_ticks, limit + lag)
        for i in range(first - 1, -1, -1):
            if self.packets[i].pts < limit:
                return self.time(self.packets[i].dts)
        return None

    @functools.cached_property
    def _decode_ticks(self) -> tuple[list[int], int]:
        """Every packet's decode time (ticks, in decode order) and the decode lag in ticks."""
        lag = max((p.dts - p.pts for p in self.packets), default=0)
        return [p.dts for p in self.packets], max(0, lag)

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

    def seek_time(self, at: Fraction) -> Fraction:
        """Where to send a demuxer that seeks by decode time (MPEG-TS lands on the first
        keyframe decoded at or after the target) so that it decodes from the last keyframe
        shown at or before `at` (source time): that keyframe's decode time, or `at` when
        no keyframe is shown by then."""
        shown, decoded = self._keyframe_times
        found = bisect.bisect_right(shown, at) - 1
        return min(at, decoded[found]) if found >= 0 else at

    @functools.cached_property
    def _keyframe_times(self) -> tuple[list[Fraction], list[Fraction]]:
        """Every keyframe's presentation and decode source times, in presentation order."""
        keys = sorted((p.pts, p.dts) for p in self.packets if p.keyframe)
        return [self.time(pts) for pts, _ in keys], [self.time(dts) for _, dts in keys]

    def _suffix_min(self) -> list[int]:
        out = [0] * len(self.packets)
        low: int | None = None
        for i in range(len(self.packets) - 1, -1, -1):
            pts = self.packets[i].pts
            low = pts if low is None else min(low, pts)
            out[i] = low
        return out
