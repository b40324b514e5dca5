"""The packet index of a remote MP4 from its sample tables: equal to a full scan of the
local file, for a small fraction of the object's bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from spooler.config import S3Settings
from spooler.media import scan_video
from spooler.mediainfo import REMOTE_PROTOCOLS
from spooler.mp4index import (
    RangeFile,
    _walked,
    boxes,
    interleave_lead,
    mp4_video_index,
    nal_headers,
)
from spooler.s3.gateway import SourceGateway
from spooler.s3.locations import S3Object
from spooler.s3.remoteindex import http_fetch
from spooler.s3.upstream import S3Upstream

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

OPTIONS = {"protocol_whitelist": REMOTE_PROTOCOLS}


@pytest.fixture
def gateway() -> Iterator[SourceGateway]:
    gw = SourceGateway(chunk_bytes=64 * 1024)
    yield gw
    gw.shutdown()


def test_pure_helpers() -> None:
    # SEI (6) then an IDR slice (5), 4-byte lengths; a prefix cut inside the SEI is unsettled
    sample = (3).to_bytes(4, "big") + b"\x06ab" + (2).to_bytes(4, "big") + b"\x65x"
    assert nal_headers(sample, 4) == ([0x06, 0x65], True)
    assert nal_headers(sample[:6], 4) == ([0x06], False)
    # audio at 0.5 s stored before video at 0.1 s: the audio leads by 0.4 s
    assert interleave_lead([(0, False, 0.5), (10, True, 0.1)]) == pytest.approx(0.4)
    # the walk over NAL headers: the next read starts after the units read whole (here the
    # SEI), at a unit whose length field is cut, and cannot step over a zero length
    assert _walked(sample[:9], 4) == 7
    assert _walked(sample, 4) == len(sample)
    assert _walked((0).to_bytes(4, "big") + b"\x65", 4) is None


def test_range_file_reads_kept_bytes_from_memory() -> None:
    # Given an object read by range, 16 bytes of it kept already (as the moov is)
    data = bytes(range(256)) * 4
    asked: list[tuple[int, int]] = []

    def fetch(offset: int, length: int) -> bytes:
        asked.append((offset, length))
        return data[offset : offset + length]

    view = RangeFile(fetch, len(data))
    assert view.fetch(100, 16) == data[100:116] and asked == [(100, 16)]
    # When the demuxer reads across them, then only the gaps are fetched
    view.seek(90)
    assert view.read(40) == data[90:130]
    assert asked[1:] == [(90, 10), (116, 14)]
    # and reads stop at the end of the object
    view.seek(-4, 2)
    assert view.read(100) == data[-4:] and view.read(10) == b""


@pytest.mark.parametrize("which", ["clip", "long_clip"])
def test_index_equals_full_scan_for_a_fraction_of_the_bytes(
    request: pytest.FixtureRequest, which: str, s3: S3Client, s3_settings: S3Settings,
    bucket: str, gateway: SourceGateway,
) -> None:  # fmt: skip
    # Given an MP4 (H.264 with B-frames, AAC) in S3, opened through the gateway
    local: Path = request.getfixturevalue(which)
    s3.upload_file(str(local), bucket, "v.mp4")
    source = gateway.open(S3Upstream(s3, S3Object(bucket, "v.mp4"), s3_settings.attempts))
    # When its index is built from the moov read by range
    index = mp4_video_index(http_fetch(source.url), source.size, OPTIONS)
    # Then it is exactly what demuxing every packet of the local file finds
    assert index == scan_video(local)
    fetched = gateway.fetched(source)
    ratio = fetched / source.size
    print(f"{which}: index fetched {fetched} of {source.size} ({ratio:.3f})")
    # for the moov read once, what the demuxer probes after it, and a few bytes a keyframe
    head = local.read_bytes()[:200_000]
    moov = next(end - start for kind, start, end in boxes(head) if kind == "moov")
    assert fetched < moov + 64 * 1024 + 256 * len([p for p in index.packets if p.keyframe])
    if which == "long_clip":
        assert ratio < 0.02
