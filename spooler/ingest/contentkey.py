"""The content key of a source (shell: reads the file through an open descriptor).

size + mtime (ns) + SHA-256 of the first and last MiB: cheap on a 100 GB file, and two
different uploads with the same name, size and mtime still differ in their bytes.
"""

from __future__ import annotations

import hashlib
import os

SAMPLE_BYTES = 1024 * 1024


def content_key(fd: int) -> str:
    info = os.fstat(fd)
    digest = hashlib.sha256()
    digest.update(_read(fd, 0, min(SAMPLE_BYTES, info.st_size)))
    tail = max(0, info.st_size - SAMPLE_BYTES)
    if tail > 0:
        digest.update(_read(fd, max(SAMPLE_BYTES, tail), info.st_size - max(SAMPLE_BYTES, tail)))
    return f"v1:{info.st_size}:{info.st_mtime_ns}:{digest.hexdigest()}"


def _read(fd: int, offset: int, length: int) -> bytes:
    out = bytearray()
    while len(out) < length:
        chunk = os.pread(fd, length - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)
