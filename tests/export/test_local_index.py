"""A local MP4's packet index from its sample tables (issue 18): equal to a full scan of its
packets, and a scan still for what has no plain moov (MKV, fragmented MP4)."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from mediagen import Clip, make_clip

from spooler.export import ExportJob
from spooler.export.sources import close_sources, inspect_sources
from spooler.h264 import AvcConfig
from spooler.media import scan_video
from spooler.mediainfo import PROTOCOLS, VideoIndex
from spooler.mp4index import (
    MAX_MOOV_BYTES,
    fd_fetch,
    mp4_video_index,
    non_reference,
    read_moov,
    video_tables,
)

CLIPS = {
    # x264 with 3 B-frames (b-pyramid): composition offsets, DTS behind PTS
    "bframes": Clip("red", seconds=3, gop_seconds=1.0, bframes=3),
    # a phone under load: timestamps wobble and every 7th frame is missing
    "vfr": Clip("green", seconds=3, jitter=0.004, drop_every=7),
}


def _local_index(path: Path) -> VideoIndex | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        return mp4_video_index(
            fd_fetch(fd), os.fstat(fd).st_size, {"protocol_whitelist": PROTOCOLS}, readers=1
        )
    finally:
        os.close(fd)


def _inspected(root: Path, name: str) -> VideoIndex:
    """The index the export's own source inspection builds (through /proc/self/fd/N)."""
    segments = [{"angle": "a", "start": 0, "end": 1}]
    spec = ExportJob.model_validate({"angles": [{"id": "a", "source": name}], "segments": segments})
    sources = inspect_sources(spec, [root], {"a"})
    try:
        index = sources[name].index
    finally:
        close_sources(sources)
    assert index is not None
    return index


@pytest.mark.parametrize("kind", sorted(CLIPS))
def test_a_local_mp4_index_equals_the_full_scan(ffmpeg: str, tmp_path: Path, kind: str) -> None:
    # Given a generated MP4 (B-frames, or a variable frame rate)
    path = make_clip(ffmpeg, CLIPS[kind], tmp_path)
    scanned = scan_video(path)
    if kind == "bframes":
        assert any(p.pts != p.dts for p in scanned.packets)
    else:
        steps = {b.pts - a.pts for a, b in zip(scanned.packets, scanned.packets[1:], strict=False)}
        assert len(steps) > 2  # not one step: the source really is variable-rate
    # When its index is built from its sample tables, read through a descriptor
    index = _local_index(path)
    # Then it is the scan's, packet for packet (IDR flags and interleave lead included)
    assert index == scanned
    assert any(p.idr for p in index.packets)
    # And the export's source inspection builds that same index
    assert _inspected(tmp_path, path.name) == scanned


def test_what_has_no_plain_moov_falls_back_to_the_scan(ffmpeg: str, tmp_path: Path) -> None:
    # Given the same pictures in Matroska, in a fragmented MP4, and in an MP4 cut short
    # (moov first: its tables name samples past the end of the file)
    mp4 = make_clip(ffmpeg, CLIPS["bframes"], tmp_path)
    mkv, fragmented = tmp_path / "clip.mkv", tmp_path / "fragmented.mp4"
    faststart, short = tmp_path / "faststart.mp4", tmp_path / "short.mp4"
    negative = tmp_path / "negative.mp4"  # ctts offsets below 0: libavformat shifts dts
    for out, extra in (
        (mkv, []),
        (fragmented, ["-movflags", "frag_keyframe+empty_moov"]),
        (faststart, ["-movflags", "faststart"]),
        (negative, ["-movflags", "negative_cts_offsets"]),
    ):
        subprocess.run(
            [ffmpeg, "-v", "error", "-nostdin", "-i", str(mp4), "-c", "copy", *extra, str(out)],
            check=True,
        )
    short.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    assert _local_index(faststart) == scan_video(faststart)  # whole, the tables serve
    for path, packets in ((mkv, 90), (fragmented, 90), (short, range(30, 80)), (negative, 90)):
        # When the sample tables are asked for: there are none to use
        assert _local_index(path) is None, path.name
        # Then the export's inspection scans the packets instead
        scanned = scan_video(path)
        assert len(scanned.packets) in (packets if isinstance(packets, range) else [packets])
        assert _inspected(tmp_path, path.name) == scanned


def test_a_moov_claiming_more_than_the_file_or_the_cap_is_not_read() -> None:
    # Given files whose top-level moov box says it is larger than the file, or than the cap
    def boxes(moov_size: int, file_size: int) -> tuple[Callable[[int, int], bytes], list[int]]:
        data = struct.pack(">I4s", 16, b"ftyp") + b"isom" * 2
        data += struct.pack(">I4sQ", 1, b"moov", moov_size)
        reads: list[int] = []

        def fetch(offset: int, length: int) -> bytes:
            reads.append(length)
            return data[offset : offset + length].ljust(min(length, file_size - offset), b"\0")

        return fetch, reads

    for moov_size, file_size in ((1 << 40, 1 << 20), (MAX_MOOV_BYTES + 32, MAX_MOOV_BYTES * 2)):
        fetch, reads = boxes(moov_size, file_size)
        # Then no index is made from them (the caller scans), and the body is never fetched
        assert read_moov(fetch, file_size) is None
        assert max(reads) <= 16
    # ... while one that fits is read whole
    fetch, reads = boxes(64, 1 << 20)
    assert read_moov(fetch, 1 << 20) == b"\0" * 48


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_sample_counts_a_track_cannot_have_are_not_expanded() -> None:
    # Given a video track's moov whose one stts entry claims 4 billion samples (8 bytes)
    handler = _box(b"hdlr", b"\0" * 8 + b"vide" + b"\0" * 12)

    def moov(count: int) -> bytes:
        stts = _box(b"stts", struct.pack(">III", 0, 1, count) + struct.pack(">I", 1001))
        stsz = _box(b"stsz", b"\0" * 12 + b"\0\0\0\1" * 8)  # eight samples' sizes
        stbl = _box(b"stbl", stts + stsz)
        return _box(b"trak", _box(b"mdia", handler + _box(b"minf", stbl)))

    # Then no per-sample table is built (the caller scans) ...
    assert video_tables(moov(0xFFFFFFFF)) is None
    # ... nor is a box read past its end when it claims more entries than it holds
    many = _box(b"stts", struct.pack(">II", 0, 0xFFFFFFFF) + struct.pack(">II", 1, 1001))
    stbl = _box(b"stbl", many + _box(b"stsz", b"\0" * 12 + b"\0\0\0\1"))
    padded = _box(b"trak", _box(b"mdia", handler + _box(b"minf", stbl))) + b"\0" * 4096
    assert video_tables(padded) is None
    # ... while counts the moov can hold are expanded as before
    assert video_tables(moov(8)) == ([1001] * 8, [0] * 8)


def _unit(header: int, body: bytes = b"xx") -> bytes:
    return (1 + len(body)).to_bytes(4, "big") + bytes([header]) + body


def test_non_reference_samples_are_told_by_their_first_slice() -> None:
    # Given samples: a delimiter then a non-reference B slice; a reference P slice; an IDR;
    # a long SEI before a non-reference slice (a second read); a zero-length unit; a
    # non-reference slice after 100 tiny units (more reads than allowed)
    data = b"".join(
        [
            _unit(0x09) + _unit(0x01),
            _unit(0x41),
            _unit(0x65),
            _unit(0x06, b"s" * 200) + _unit(0x01),
            (0).to_bytes(4, "big") + b"\x01",
            _unit(0x09, b"") * 100 + _unit(0x01),
        ]
    )
    samples, at = [], 0
    for size in (len(_unit(0x09)) * 2, 7, 7, len(_unit(0x06, b"s" * 200)) + 7, 5, 507):
        samples.append((at, size))
        at += size

    def fetch(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    # Then only the two non-reference pictures are found; what cannot be read in a few reads
    # is a reference
    assert non_reference(fetch, samples, 4) == {samples[0][0], samples[3][0]}


def test_sources_without_usable_sample_positions_drop_nothing(tmp_path: Path, ffmpeg: str) -> None:
    from spooler.export.sources import non_reference_packets

    # Given a B-frame clip indexed from its tables, and the same source as a pure test sees it
    make_clip(ffmpeg, CLIPS["bframes"], tmp_path).rename(tmp_path / "b.mp4")
    spec = ExportJob.model_validate(
        {
            "angles": [{"id": "a", "source": "b.mp4"}],
            "segments": [{"angle": "a", "start": 0, "end": 1}],
        }
    )
    sources = inspect_sources(spec, [tmp_path], {"a"})
    try:
        source = sources["b.mp4"]
        assert source.index is not None
        every = list(range(len(source.index.packets)))
        found = non_reference_packets(source, every)
        unopened = non_reference_packets(replace(source, fd=None), every)
        packets = list(source.index.packets)
        packets[1] = replace(packets[1], pos=packets[0].pos)
        shared = replace(source, index=replace(source.index, packets=tuple(packets)))
        crafted = non_reference_packets(shared, every)
    finally:
        close_sources(sources)
    # Then the opened file has non-reference pictures (x264's B-pyramid), never a keyframe;
    # without a descriptor (a remote or pure source), or with two samples at one position
    # (crafted tables), none is claimed
    assert found and not any(source.index.packets[i].keyframe for i in found)
    assert unopened == frozenset() and crafted == frozenset()


def test_an_interlaced_source_drops_nothing(tmp_path: Path, ffmpeg: str) -> None:
    from spooler.export.sources import non_reference_packets

    # Given x264's interlaced coding (MBAFF) with a B-pyramid: non-reference pictures, but
    # its SPS allows field pictures, whose two fields each carry a nal_ref_idc
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2",
         "-c:v", "libx264", "-preset", "faster", "-x264-params",
         "interlaced=1:bframes=3:b-pyramid=normal:keyint=25", "-pix_fmt", "yuv420p",
         str(tmp_path / "i.mp4")],
        check=True,
    )  # fmt: skip
    spec = ExportJob.model_validate(
        {
            "angles": [{"id": "a", "source": "i.mp4"}],
            "segments": [{"angle": "a", "start": 0, "end": 1}],
            "audio": {"mode": "none"},
        }
    )
    sources = inspect_sources(spec, [tmp_path], {"a"})
    try:
        source = sources["i.mp4"]
        assert source.index is not None and source.fd is not None
        samples = [(p.pos, p.size) for p in source.index.packets]
        flagged = non_reference(fd_fetch(source.fd), samples, 4)
        every = list(range(len(source.index.packets)))
        found = non_reference_packets(source, every)
        # (as is none of a source whose parameter sets are in its samples: avc3, no SPS)
        config = AvcConfig.parse(source.info.extradata or b"")
        in_band = replace(config, sps=(), pps=()).to_bytes()
        no_sps = non_reference_packets(
            replace(source, info=replace(source.info, extradata=in_band)), every
        )
    finally:
        close_sources(sources)
    # Then its samples' first slices say non-reference, yet none is claimed
    assert flagged
    assert found == frozenset() and no_sps == frozenset()


@dataclass
class _Packet:
    pts: int | None
    dts: int | None


def test_decode_times_are_filled_in_before_the_first_known_one() -> None:
    from spooler.media import MAX_UNTIMED, with_decode_times

    # Given a B-frame stream's first packets as Matroska's demuxer yields them (no decode
    # time until its reorder buffer has filled), then a flush packet without timestamps
    packets = [
        _Packet(0, None),
        _Packet(3, None),
        _Packet(1, 0),
        _Packet(2, 1),
        _Packet(None, None),
    ]
    # Then each untimed one gets the first known time minus a frame per packet between
    timed = list(with_decode_times(packets, 1))
    assert [(p.pts, p.dts) for p in timed] == [(0, -2), (3, -1), (1, 0), (2, 1)]
    # And a stream that never says is refused rather than copied with made-up times
    with pytest.raises(ValueError, match="without a decode time"):
        list(with_decode_times([_Packet(n, None) for n in range(MAX_UNTIMED + 1)], 1))
