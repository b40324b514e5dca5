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
from spooler.export.commands import MUXERS, AudioCopy, CopySegment
from spooler.media import OPEN_OPTIONS

_OPEN = OPEN_OPTIONS  # only plain files, only the allowed demuxers
CANCEL_CHECK_PACKETS = 500


def _video_packets(
    segments: list[CopySegment], out_stream: Any, log: Callable[[str], None]
) -> Iterator[tuple[float, int, Any]]:
    """(output dts in seconds, order, packet) of every planned video packet, in order.

    Timestamps are integers in the first source's time base (compatible angles share it;
    another one is rescaled), so the hot loop does no fraction arithmetic.
    """
    containers: dict[Path, Any] = {}
    out_tb: Fraction | None = None
    last_dts: int | None = None
    order = 0
    try:
        for segment in segments:
            if segment.path not in containers:
                containers[segment.path] = av.open(f"file:{segment.path}", options=_OPEN)
            container = containers[segment.path]
            stream = container.streams.video[0]
            assert stream.time_base is not None
            tb = Fraction(stream.time_base)
            out_tb = out_tb or tb
            scale = tb / out_tb  # 1 unless the angles' time bases differ
            origin = Fraction(container.start_time or 0, 1_000_000)
            shift = round((segment.shift - origin) / out_tb)  # source ticks -> output ticks
            seconds = float(out_tb)
            container.seek(segment.head_dts, stream=stream, backward=True, any_frame=False)
            started = False
            count = 0
            for packet in container.demux(stream):
                if packet.dts is None or packet.pts is None:
                    continue
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
        for container in containers.values():
            container.close()


def _audio_packets(
    container: Any, out_stream: Any, cut: AudioCopy | None
) -> Iterator[tuple[float, int, Any]]:
    """Audio packets in output time; with `cut`, only those nearest inside [start, end)."""
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
            if preroll is not None:
                # The packet before the cut, at negative time: the decoder needs it to
                # overlap-add the first kept one, and the muxer's edit list hides it.
                preroll.pts += ticks
                preroll.dts += ticks
                preroll.stream = out_stream
                yield float(preroll.dts * tb), -order, preroll
                preroll = None
            packet.pts += ticks
            packet.dts += ticks
        packet.stream = out_stream
        yield packet.dts * seconds, -order - 1, packet


def remux(
    segments: list[CopySegment],
    audio: Path | AudioCopy | None,
    output: Path,
    container_name: str,
    faststart: bool,
    check_cancelled: Callable[[], None],
    log: Callable[[str], None],
    on_progress: Callable[[float], None] = lambda seconds: None,
) -> None:
    """Write `output`: the segments' video packets back to back, plus the audio packets."""
    options = {"movflags": "+faststart"} if faststart and container_name in ("mp4", "mov") else {}
    try:
        with av.open(
            f"file:{output}", mode="w", format=MUXERS[container_name], options=options
        ) as out:
            with av.open(f"file:{segments[0].path}", options=_OPEN) as template:
                video_out = out.add_stream_from_template(template.streams.video[0])
            streams: list[Iterator[tuple[float, int, Any]]] = [
                _video_packets(segments, video_out, log)
            ]
            cut = audio if isinstance(audio, AudioCopy) else None
            audio_path = cut.path if cut is not None else audio
            audio_in = av.open(f"file:{audio_path}", options=_OPEN) if audio_path else None
            try:
                if audio_in is not None:
                    audio_out = out.add_stream_from_template(audio_in.streams.audio[0])
                    streams.append(_audio_packets(audio_in, audio_out, cut))
                merged = heapq.merge(*streams, key=lambda x: x[:2])
                for n, (at, _, packet) in enumerate(merged):
                    if n % CANCEL_CHECK_PACKETS == 0:
                        check_cancelled()
                        on_progress(float(at))
                    out.mux(packet)
            finally:
                if audio_in is not None:
                    audio_in.close()
    except (av.FFmpegError, OSError) as exc:
        if "No space left" in str(exc):
            raise JobError(ErrorCode.DISK_FULL, "no space left on device while writing") from exc
        raise JobError(ErrorCode.FFMPEG_FAILED, f"stream copy failed: {exc}") from exc
