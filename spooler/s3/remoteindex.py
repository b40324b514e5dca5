"""The video packet index of a remote MP4/MOV, its sample tables read by range.

Over S3 `media.scan_video` would download the whole object; `mp4index.mp4_video_index`
reads the moov and a prefix of each keyframe instead (0.011 of the bytes of a 60 s
source, docs/s3.md). This module gives it its reads (export/sources.py `_video_index`):
HTTP range requests to the loopback gateway, a few in flight at once (each a round trip).
"""

from __future__ import annotations

import urllib.request

from spooler.mp4index import Fetch


def http_fetch(url: str) -> Fetch:
    """Range reads from the loopback gateway (the only place remote bytes come from)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("remote indexes are read through the loopback gateway only")

    def fetch(offset: int, length: int) -> bytes:
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (gateway URL)
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            data: bytes = response.read()
        return data

    return fetch
