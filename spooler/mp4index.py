"""The video packet index of an MP4/MOV from its sample tables, through a byte reader.

`media.scan_video` demuxes every packet: over S3 that downloads the whole object, and on a
local heavy source it reads every byte (1.9 GB for issue 18's three 5-minute angles). An
MP4 already holds that index in its `moov`: the demuxer's index entries (stsz, stco/co64,
stsc, stss: each sample's position, size and keyframe flag, and its decode time), plus the
composition offsets (ctts) and sample durations (stts) parsed here. Only three things are
read: the moov (once: the demuxer reads it from memory, through `RangeFile`), the bytes the
demuxer probes after it, and the NAL headers at the start of each keyframe (whether it
holds an IDR slice: a few dozen bytes, more only when SEI or parameter sets come first).
Smart render later reads the same headers of the packets around its parts
(`non_reference`: which pictures no other picture is predicted from).
The result equals scan_video's (tests compare). Fragmented MP4s and other containers give
None: the caller scans.

The reads go through a `Fetch`: by range from the loopback gateway for a remote source
(s3/remoteindex.py), `os.pread` on the open descriptor for a local one (`fd_fetch`).
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from itertools import compress, takewhile
from typing import Any

import av

from spooler.h264 import NAL_IDR, is_idr
from spooler.media import LEAD_WINDOW, lead_in_order, nal_length_size
from spooler.mediainfo import (
    FORMAT_WHITELIST,
    NO_PROBE_DECODE,
    VideoIndex,
    VideoPacket,
    is_mov,
)

# Bytes read at a NAL unit's start to learn its type: its length field and header, with room
# for a few small units (an access unit delimiter, parameter sets) after it. A longer unit
# (x264's ~1 KB SEI in the first keyframe) is stepped over: the next read is at its end.
NAL_WINDOW = 64
KEYFRAME_READERS = 8
# Reads at most to find a sample's first slice when telling reference pictures (a delimiter,
# SEI and parameter sets before it take one or two).
NON_REFERENCE_READS = 4
# A moov larger than this is not read (read_moov): ~40x that of a 10-hour 60 fps camera file.
MAX_MOOV_BYTES = 64 * 1024 * 1024
# Samples of a video track expanded into per-sample lists at most: 46 hours at 60 fps.
MAX_SAMPLES = 10_000_000

Fetch = Callable[[int, int], bytes]  # (offset, length) -> bytes


def fd_fetch(fd: int) -> Fetch:
    """Reads of a local source at its open descriptor (sources.py opened and confined it;
    `os.pread` leaves the descriptor's offset alone for ffmpeg's /proc/self/fd reads)."""

    def fetch(offset: int, length: int) -> bytes:
        return os.pread(fd, length, offset)

    return fetch


# --- the boxes (pure) ---------------------------------------------------------------


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError("box runs past its parent")
        yield kind.decode("latin-1"), pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: str) -> tuple[int, int] | None:
    return next(((s, e) for k, s, e in boxes(data, start, end) if k == kind), None)


def video_tables(moov: bytes) -> tuple[list[int], list[int]] | None:
    """Per-sample durations (stts) and composition offsets (ctts, zeros without one) of the
    first video track; None if the moov has none or is fragmented (mvex)."""
    if _child(moov, 0, len(moov), "mvex"):
        return None
    for kind, start, end in boxes(moov):
        if kind != "trak":
            continue
        mdia = _child(moov, start, end, "mdia")
        hdlr = mdia and _child(moov, *mdia, "hdlr")
        if not mdia or not hdlr or moov[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        minf = _child(moov, *mdia, "minf")
        stbl = minf and _child(moov, *minf, "stbl")
        stts = stbl and _child(moov, *stbl, "stts")
        if not stbl or not stts:
            return None
        ctts = _child(moov, *stbl, "ctts")
        stts_runs = _pairs(moov, *stts)
        # Signed whatever the box's version says, as libavformat reads them.
        ctts_runs = _pairs(moov, *ctts, signed=True) if ctts else []
        if stts_runs is None or ctts_runs is None:
            return None
        runs = [stts_runs, ctts_runs]
        # The counts are the file's word: one 8-byte entry may claim 4 billion samples.
        # A real track has a 4-byte stsz entry per sample, so more samples than a quarter
        # of the moov's bytes (or than MAX_SAMPLES) is not a track we expand in memory.
        limit = min(len(moov) // 4, MAX_SAMPLES)
        if any(sum(count for count, _ in pairs) > limit for pairs in runs):
            return None
        durations = [d for count, d in runs[0] for _ in range(count)]
        offsets = [o for count, o in runs[1] for _ in range(count)] if ctts else []
        return durations, offsets if ctts else [0] * len(durations)
    return None


def _pairs(data: bytes, start: int, end: int, signed: bool = False) -> list[tuple[int, int]] | None:
    """The (count, value) entries of an stts or ctts box (after version and flags); None
    when the box claims more entries than it holds (a crafted count is not unpacked)."""
    (entries,) = struct.unpack(">I", data[start + 4 : start + 8])
    if 8 + 8 * entries > end - start:
        return None
    fmt = ">Ii" if signed else ">II"
    return [
        struct.unpack(fmt, data[start + 8 + 8 * i : start + 16 + 8 * i]) for i in range(entries)
    ]


def nal_headers(prefix: bytes, length_size: int) -> tuple[list[int], bool]:
    """The header bytes of the NAL units whose header lies in `prefix` (type: the low 5
    bits, nal_ref_idc: the 2 above), and whether a slice was among them (the last): then
    the prefix was enough to tell IDR or not, reference or not."""
    headers, pos = [], 0
    while pos + length_size < len(prefix):
        size = int.from_bytes(prefix[pos : pos + length_size], "big")
        if size == 0:
            break
        headers.append(prefix[pos + length_size])
        if headers[-1] & 0x1F in (1, NAL_IDR):
            return headers, True
        pos += length_size + size
    return headers, False


def interleave_lead(entries: list[tuple[int, bool, float]], window: float = LEAD_WINDOW) -> float:
    """media._interleave_lead from index entries: (file position, is video, dts seconds)."""
    in_file_order = [(is_video, at) for _, is_video, at in sorted(entries)]
    return lead_in_order(list(takewhile(lambda item: item[1] <= window, in_file_order)))


# --- the shell ----------------------------------------------------------------------


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of the object for the demuxer: bytes already fetched (the
    moov and the box headers read to find it) come from memory, the rest is fetched by
    range, exactly as asked (no read-ahead). So the moov is downloaded once."""

    def __init__(self, fetch: Fetch, size: int) -> None:
        super().__init__()
        self._fetch, self.size, self._pos = fetch, size, 0
        self._starts: list[int] = []  # sorted, non-overlapping kept segments
        self._chunks: list[bytes] = []

    def fetch(self, offset: int, length: int) -> bytes:
        """Fetch (or serve) bytes and keep them for the demuxer's reads."""
        data = self._read_at(offset, length)
        self._keep(offset, data)
        return data

    def _keep(self, offset: int, data: bytes) -> None:
        at = bisect.bisect_left(self._starts, offset)
        if data and not (at < len(self._starts) and self._starts[at] == offset):
            self._starts.insert(at, offset)
            self._chunks.insert(at, data)

    def _read_at(self, offset: int, length: int) -> bytes:
        parts, end = [], min(self.size, offset + length)
        while offset < end:
            at = bisect.bisect_right(self._starts, offset) - 1
            if at >= 0 and offset < self._starts[at] + len(self._chunks[at]):
                start, chunk = self._starts[at], self._chunks[at]
                piece = chunk[offset - start : end - start]
            else:  # a gap: fetch up to the next kept segment
                following = self._starts[at + 1] if at + 1 < len(self._starts) else end
                piece = self._fetch(offset, min(end, following) - offset)
                if not piece:
                    break
            parts.append(piece)
            offset += len(piece)
        return b"".join(parts)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        wanted = self.size - self._pos if size < 0 else size
        data = self._read_at(self._pos, wanted)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_moov(fetch: Fetch, size: int) -> bytes | None:
    """Walk the top-level boxes by range (16 bytes each) to the moov, then read it whole.
    None for a moov past the end of the file or over MAX_MOOV_BYTES: its size is the
    file's word, and a crafted one must not pull a whole large source into the daemon's
    memory (the caller scans instead)."""
    pos = 0
    while pos + 8 <= size:
        head = fetch(pos, min(16, size - pos))
        box_size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if box_size == 1:
            box_size, header = struct.unpack(">Q", head[8:16])[0], 16
        elif box_size == 0:
            box_size = size - pos
        if box_size < header:
            return None
        if kind == b"moov":
            if pos + box_size > size or box_size - header > MAX_MOOV_BYTES:
                return None
            return fetch(pos + header, box_size - header)
        pos += box_size
    return None


def mp4_video_index(
    fetch: Fetch, size: int, options: dict[str, str], readers: int = KEYFRAME_READERS
) -> VideoIndex | None:
    """The packet index of the `size` bytes `fetch` reads, or None when they are not a plain
    MP4/MOV (the caller then scans). `readers`: keyframe prefixes read at once (a round
    trip each over the network; 1 for a local file)."""
    view = RangeFile(fetch, size)
    moov = read_moov(view.fetch, size)
    tables = video_tables(moov) if moov is not None else None
    if tables is None:
        return None
    durations, offsets = tables
    # The demuxer reads through `view`: the moov from memory. No protocol is opened at all;
    # `options` (the reader's protocol list) still bound anything else it might open.
    opened = av.open(
        view, "r", options={**options, "format_whitelist": FORMAT_WHITELIST, **NO_PROBE_DECODE}
    )
    with opened as container:
        if not is_mov(container.format.name):
            return None
        stream = container.streams.video[0]
        entries = list(stream.index_entries)
        if len(entries) != len(durations) or len(offsets) != len(durations):
            return None  # edit lists that drop samples, or tables we do not follow
        if min(offsets, default=0) < 0:
            # Negative composition offsets: libavformat shifts every decode time by the
            # largest (dts_shift), with rules of its own; the scan reads what it makes.
            return None
        if any(e.pos + e.size > size for e in entries):
            return None  # a cut-short file: the scan finds the packets really there
        length_size = nal_length_size(stream)
        keyframes = [(e.pos, e.size) for e in entries if e.is_keyframe] if length_size else []

        def is_idr(keyframe: tuple[int, int]) -> bool:
            return _idr(fetch, keyframe[0], keyframe[1], length_size)

        # One small read per keyframe: over the network a few in flight at once; a local
        # file's reads (readers 1) in this thread, without a pool.
        if readers > 1:
            with ThreadPoolExecutor(readers) as pool:
                found = list(pool.map(is_idr, keyframes))
        else:
            found = [is_idr(k) for k in keyframes]
        idrs = set(compress(keyframes, found))
        packets = []
        for entry, duration, offset in zip(entries, durations, offsets, strict=True):
            keyframe = bool(entry.is_keyframe)
            idr = keyframe and (entry.pos, entry.size) in idrs
            packets.append(
                VideoPacket(
                    entry.timestamp + offset,
                    entry.timestamp,
                    duration,
                    keyframe,
                    idr,
                    pos=entry.pos,
                    size=entry.size,
                )
            )
        assert stream.time_base is not None
        origin = Fraction(container.start_time or 0, 1_000_000)
        lead = interleave_lead(list(_all_entries(container)))
        return VideoIndex(Fraction(stream.time_base), origin, tuple(packets), lead)


def _idr(fetch: Fetch, pos: int, size: int, length_size: int) -> bool:
    """Does the keyframe's first slice say IDR? Its NAL headers are walked by range: one
    small read, more only to step over a long unit before the slice."""
    header = _first_slice_header(fetch, pos, size, length_size)
    if header is not None:
        return header & 0x1F == NAL_IDR
    return is_idr(fetch(pos, size), length_size)  # an odd unit: read the sample whole


def _first_slice_header(
    fetch: Fetch, pos: int, size: int, length_size: int, reads: int | None = None
) -> int | None:
    """The NAL header byte of the sample's first slice, walked by range: one small read,
    more only to step over a long unit before the slice. None when a unit of length 0, or
    one running past the sample, stops the walk, or after `reads` reads (a crafted sample
    of many tiny units would otherwise cost a read per 64 bytes)."""
    offset = 0  # of the current NAL unit in the sample
    while offset + length_size < size and reads != 0:
        reads = None if reads is None else reads - 1
        window = fetch(pos + offset, min(NAL_WINDOW, size - offset))
        headers, settled = nal_headers(window, length_size)
        if settled:
            return headers[-1]
        walked = _walked(window, length_size)
        if walked is None or walked == 0:
            return None
        offset += walked
    return None


def non_reference(fetch: Fetch, samples: list[tuple[int, int]], length_size: int) -> set[int]:
    """The positions of the samples among `samples` ((position, size) pairs) whose first
    slice has nal_ref_idc 0: a non-reference picture, which no other picture is predicted
    from (H.264 7.4.1: every slice of a picture carries the same nal_ref_idc). A sample
    whose slice cannot be found in a few reads counts as a reference picture."""
    found = set()
    for pos, size in samples:
        header = _first_slice_header(fetch, pos, size, length_size, reads=NON_REFERENCE_READS)
        if header is not None and header & 0x60 == 0:
            found.add(pos)
    return found


def _walked(window: bytes, length_size: int) -> int | None:
    """Where the first unit not wholly read starts: the next read's offset (pure); None for
    a zero length, which no walk can step over."""
    pos = 0
    while pos + length_size <= len(window):
        size = int.from_bytes(window[pos : pos + length_size], "big")
        if size == 0:
            return None
        pos += length_size + size
    return pos


def _all_entries(container: Any) -> Iterator[tuple[int, bool, float]]:
    video = container.streams.video[0]
    for stream in list(container.streams.video[:1]) + list(container.streams.audio):
        base = float(stream.time_base)
        for entry in stream.index_entries:
            yield entry.pos, stream.index == video.index, entry.timestamp * base
