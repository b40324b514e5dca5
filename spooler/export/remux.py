"""Stream-copy execution: copy the planned video packets and the encoded audio into one file.

Done in-process with PyAV because the cut points are packet-exact (a keyframe head, a
clean tail chosen from the packet scan): ffmpeg's -t / concat `outpoint` stop on decode
timestamps, which with B-frames shows frames past the cut or drops a reference. Packets are
merged by time so the output is interleaved as a player streams it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from spooler.errors import ErrorCode, JobError
from spooler.export.commands import MUXERS, AudioCopy, EncodedPart, VideoPart
from spooler.h264 import AvcConfig
from spooler.media import frame_step, open_demuxer, with_decode_times
from spooler.mediainfo import DEMUX_OPTIONS, MediaLocation, open_options, reader_url

# Our own piece files (MP4): only plain files, only the allowed demuxers, packets only.
_OPEN = DEMUX_OPTIONS
CANCEL_CHECK_PACKETS = 500


def _open_source(location: MediaLocation) -> Any:
    """A source (or our audio file) for reading: a local file with the file protocol only,
    a remote one through the loopback gateway (http,tcp only); the demuxer allow-list. Its
    probe decodes a frame: a template's stream copies what only the decoder reads, such as
    an H.264 stream's pixel aspect ratio (the packet reads use media.open_demuxer)."""
    return av.open(reader_url(location), options=open_options(location))


class _PieceReader:
    """Reads the packets of encoded piece files in order (each file is read once)."""

    def __init__(self) -> None:
        self._open: dict[Path, tuple[Any, Iterator[Any], list[int]]] = {}

    def take(self, part: EncodedPart) -> Iterator[Any]:
        if part.path not in self._open:
            container = av.open(f"file:{part.path}", options=_OPEN)
            packets: Iterator[Any] = (
                p for p in container.demux(container.streams.video[0]) if p.size
            )
            self._open[part.path] = (container, packets, [0])
        _, packets, position = self._open[part.path]
        if position[0] != part.first:
            raise ValueError(f"{part.label}: encoded packets out of order in {part.path.name}")
        for _ in range(part.count):
            packet = next(packets, None)
            if packet is None:
                raise ValueError(f"{part.label}: {part.path.name} has too few frames")
            position[0] += 1
            yield packet

    def close(self) -> None:
        for container, _, _ in self._open.values():
            container.close()


def _video_packets(
    parts: list[VideoPart], out_stream: Any, out_tb: Fraction, log: Callable[[str], None]
) -> Iterator[tuple[float, int, Any]]:
    """(output dts in seconds, order, packet) of every planned video packet, in order.

    Timestamps are integers in the track's time base (compatible angles share it; another
    one is rescaled), so the hot loop does no fraction arithmetic.
    """
    containers: dict[MediaLocation, Any] = {}
    pieces = _PieceReader()
    last_dts: int | None = None
    order = 0
    seconds = float(out_tb)
    try:
        for segment in parts:
            if isinstance(segment, EncodedPart):
                for packet in pieces.take(segment):
                    # Frame numbers in the piece file (its timestamps are n / rate).
                    ticks = Fraction(packet.time_base) * segment.rate
                    shown, decoded = round(packet.pts * ticks), round(packet.dts * ticks)
                    if not segment.first <= shown < segment.first + segment.count:
                        raise ValueError(f"{segment.label}: frame {shown} is outside its part")
                    pts = segment.pts + (shown - segment.first) * segment.step
                    dts = segment.pts + (decoded - segment.first) * segment.step
                    if last_dts is not None and dts <= last_dts:
                        dts = last_dts + 1
                    packet.pts, packet.dts, packet.duration = pts, dts, segment.step
                    packet.time_base = out_tb
                    packet.stream = out_stream
                    last_dts = dts
                    order += 1
                    yield dts * seconds, order, packet
                log(f"# encoded {segment.count} video packets for {segment.label}")
                continue
            if segment.path not in containers:
                containers[segment.path] = open_demuxer(segment.path)
            container = containers[segment.path]
            stream = container.streams.video[0]
            assert stream.time_base is not None
            tb = Fraction(stream.time_base)
            scale = tb / out_tb  # 1 unless the angles' time bases differ
            origin = Fraction(container.start_time or 0, 1_000_000)
            shift = round((segment.shift - origin) / out_tb)  # source ticks -> output ticks
            container.seek(segment.head_dts, stream=stream, backward=True, any_frame=False)
            started = False
            count = 0
            # Decode times as the index has them (media.scan_video): Matroska's first
            # packets after a seek come without one.
            for packet in with_decode_times(container.demux(stream), frame_step(stream)):
                if not started:
                    if packet.dts < segment.head_dts:
                        continue  # the seek landed on an earlier keyframe
                    started = True
                if segment.stop_dts is not None and packet.dts >= segment.stop_dts:
                    break
                pts = (packet.pts if scale == 1 else round(packet.pts * scale)) + shift
                dts = (packet.dts if scale == 1 else round(packet.dts * scale)) + shift
                if last_dts is not None and dts <= last_dts:
                    # Joined streams with different reorder delays: keep DTS increasing.
                    dts = last_dts + 1
                    if dts > pts:
                        log(f"# {segment.label}: dts {dts} > pts {pts} at the join")
                if scale != 1:
                    packet.duration = round((packet.duration or 0) * scale)
                    packet.time_base = out_tb
                packet.pts, packet.dts = pts, dts
                last_dts = dts
                packet.stream = out_stream
                count += 1
                order += 1
                yield dts * seconds, order, packet
            log(f"# copied {count} video packets for {segment.label} ({segment.angle})")
    finally:
        pieces.close()
        for container in containers.values():
            container.close()


def _audio_packets(
    container: Any, out_stream: Any, cut: AudioCopy | None, *, edit_list: bool
) -> Iterator[tuple[float, int, Any]]:
    """Audio packets in output time; with `cut`, only those nearest inside [start, end).
    Packets before time 0 (the pre-roll before a cut, an encoder's priming) only where the
    output's edit list hides them (`edit_list`, MP4/MOV): Matroska has none, and its muxer
    would delay every stream to make them non-negative (the video would start ~21 ms late
    and last that much longer)."""
    stream = container.streams.audio[0]
    tb = Fraction(stream.time_base)
    seconds = float(tb)
    ticks = 0
    start2 = end2 = 0.0
    if cut is not None:
        origin = Fraction(container.start_time or 0, 1_000_000)
        ticks = -round((cut.start + origin) / tb)
        # Twice the cut points in ticks: compare 2*pts + duration (twice the middle) in floats.
        start2, end2 = float(2 * (cut.start + origin) / tb), float(2 * (cut.end + origin) / tb)
        # Seek a little early: the packet before the cut is needed as pre-roll (and the
        # file's first packet may sit at a negative time: AAC encoder priming).
        container.seek(
            round((cut.start + origin - Fraction(1, 5)) / tb), stream=stream, backward=True
        )
    preroll: Any = None
    for order, packet in enumerate(container.demux(stream)):
        if packet.dts is None or packet.pts is None:
            continue
        if cut is not None:
            # A packet belongs to the cut if its middle does: the bed moves by < half a packet.
            middle2 = 2 * packet.pts + (packet.duration or 0)
            if middle2 < start2:
                preroll = packet
                continue
            if middle2 >= end2:
                break
            if preroll is not None and edit_list:
                # The packet before the cut, at negative time: the decoder needs it to
                # overlap-add the first kept one, and the muxer's edit list hides it.
                preroll.pts += ticks
                preroll.dts += ticks
                preroll.stream = out_stream
                yield float(preroll.dts * tb), -order, preroll
                preroll = None
            packet.pts += ticks
            packet.dts += ticks
        if packet.pts < 0 and not edit_list:
            continue
        packet.stream = out_stream
        yield packet.dts * seconds, -order - 1, packet


def joined_config(template: bytes | None, parts: list[VideoPart]) -> bytes | None:
    """The track's avcC: the source's parameter sets plus those of the encoded pieces
    (every piece file was encoded with the same settings, so they must all agree)."""
    files = list(dict.fromkeys(p.path for p in parts if isinstance(p, EncodedPart)))
    if not files:
        return None
    configs = set()
    for path in files:
        with av.open(f"file:{path}", options=_OPEN) as piece:
            configs.add(bytes(piece.streams.video[0].codec_context.extradata or b""))
    if len(configs) != 1:
        raise ValueError("the encoded pieces have different parameter sets")
    return AvcConfig.parse(template or b"").joined(AvcConfig.parse(configs.pop())).to_bytes()


def remux(
    segments: list[VideoPart],
    audio: Path | AudioCopy | None,
    output: Path,
    container_name: str,
    faststart: bool,
    check_cancelled: Callable[[], None],
    log: Callable[[str], None],
    on_progress: Callable[[float], None] = lambda seconds: None,
    template_path: MediaLocation | None = None,
) -> None:
    """Write `output`: the segments' video packets back to back, plus the audio packets.
    The video track copies the stream of `template_path` (default: the first segment's
    source); with encoded parts its avcC also carries their parameter sets."""
    options = {"movflags": "+faststart"} if faststart and container_name in ("mp4", "mov") else {}
    try:
        with av.open(
            f"file:{output}", mode="w", format=MUXERS[container_name], options=options
        ) as out:
            with _open_source(template_path or segments[0].path) as template:
                source_stream = template.streams.video[0]
                video_out = out.add_stream_from_template(source_stream)
                assert source_stream.time_base is not None
                out_tb = Fraction(source_stream.time_base)
                config = joined_config(
                    bytes(source_stream.codec_context.extradata or b""), segments
                )
            if config is not None:
                video_out.codec_context.extradata = config
            streams: list[Iterator[tuple[float, int, Any]]] = [
                _video_packets(segments, video_out, out_tb, log)
            ]
            cut = audio if isinstance(audio, AudioCopy) else None
            audio_path = audio.path if isinstance(audio, AudioCopy) else audio
            audio_in = _open_source(audio_path) if audio_path else None
            try:
                if audio_in is not None:
                    audio_out = out.add_stream_from_template(audio_in.streams.audio[0])
                    edit_list = container_name in ("mp4", "mov")
                    streams.append(_audio_packets(audio_in, audio_out, cut, edit_list=edit_list))
                merged = heapq.merge(*streams, key=lambda x: x[:2])
                for n, (at, _, packet) in enumerate(merged):
                    if n % CANCEL_CHECK_PACKETS == 0:
                        check_cancelled()
                        on_progress(float(at))
                    out.mux(packet)
            finally:
                if audio_in is not None:
                    audio_in.close()
    except (av.FFmpegError, OSError, ValueError) as exc:
        if "No space left" in str(exc):
            raise JobError(ErrorCode.DISK_FULL, "no space left on device while writing") from exc
        raise JobError(ErrorCode.FFMPEG_FAILED, f"stream copy failed: {exc}") from exc
