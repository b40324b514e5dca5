"""A local MP4's packet index from its sample tables (issue 18): equal to a full scan of its
packets, and a scan still for what has no plain moov (MKV, fragmented MP4)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mediagen import Clip, make_clip

from spooler.export import ExportJob
from spooler.export.sources import close_sources, inspect_sources
from spooler.media import scan_video
from spooler.mediainfo import PROTOCOLS, VideoIndex
from spooler.mp4index import fd_fetch, mp4_video_index

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
    for out, extra in (
        (mkv, []),
        (fragmented, ["-movflags", "frag_keyframe+empty_moov"]),
        (faststart, ["-movflags", "faststart"]),
    ):
        subprocess.run(
            [ffmpeg, "-v", "error", "-nostdin", "-i", str(mp4), "-c", "copy", *extra, str(out)],
            check=True,
        )
    short.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    assert _local_index(faststart) == scan_video(faststart)  # whole, the tables serve
    for path, packets in ((mkv, 90), (fragmented, 90), (short, range(30, 80))):
        # When the sample tables are asked for: there are none to use
        assert _local_index(path) is None, path.name
        # Then the export's inspection scans the packets instead
        scanned = scan_video(path)
        assert len(scanned.packets) in (packets if isinstance(packets, range) else [packets])
        assert _inspected(tmp_path, path.name) == scanned
