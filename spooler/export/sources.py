"""Sources: confine each path to the media roots, open it once, probe it (the shell).

What probing finds, and whether it covers the edit, is pure data in probed.py.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import stat
from pathlib import Path
from typing import Any

import av

from spooler.errors import ErrorCode, JobError
from spooler.export.models import ExportJob, ExternalAudio, FollowAudio
from spooler.export.probed import Source
from spooler.export.rules import check_source_syntax
from spooler.export.watermark import IMAGE_DEMUXER
from spooler.h264 import AvcConfig, frame_mbs_only
from spooler.media import probe, scan_audio, scan_video
from spooler.mediainfo import (
    MediaInfo,
    MediaLocation,
    RemoteMedia,
    VideoIndex,
    reader_protocols,
    reader_url,
)
from spooler.mp4index import KEYFRAME_READERS, fd_fetch, mp4_video_index, non_reference
from spooler.s3.locations import is_remote
from spooler.s3.remoteindex import http_fetch
from spooler.s3.remotes import JobRemotes, not_enabled, shown_name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_SIDE = 4096


def resolve_source(name: str, roots: list[Path]) -> Path:
    """The real path of `name` under the first media root that has it.

    Symlinks are resolved before the containment check, so a link pointing out of the
    roots is refused rather than followed.
    """
    problem = check_source_syntax(name)
    if problem:
        raise JobError(ErrorCode.SOURCE_NOT_ALLOWED, f"{name!r}: {problem}", {"source": name})
    outside = False
    for root in roots:
        real_root = root.resolve()
        candidate = (real_root / name).resolve()
        if not candidate.is_relative_to(real_root):
            outside = outside or candidate.exists()
            continue
        if any(ord(c) < 32 or ord(c) == 127 for c in str(candidate)):
            # A link inside the root to a name with a newline would break an ffconcat line.
            raise JobError(
                ErrorCode.SOURCE_NOT_ALLOWED,
                f"{name!r} resolves to a path with control characters",
                {"source": name},
            )
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise JobError(
                ErrorCode.SOURCE_NOT_ALLOWED, f"{name!r} is not a regular file", {"source": name}
            )
    if outside:
        raise JobError(
            ErrorCode.SOURCE_NOT_ALLOWED,
            f"{name!r} resolves outside the media roots",
            {"source": name},
        )
    raise JobError(
        ErrorCode.SOURCE_MISSING, f"{name!r} was not found in any media root", {"source": name}
    )


def _not_allowed(name: str, why: str) -> JobError:
    return JobError(ErrorCode.SOURCE_NOT_ALLOWED, f"{name!r} {why}", {"source": name})


def open_source(name: str, roots: list[Path]) -> tuple[Path, int]:
    """Resolve `name`, then open that file once: (its real path, a read-only descriptor).

    Closes the race between the check and the use: the final component is opened with
    O_NOFOLLOW (a symlink swapped in after resolution fails with ELOOP), the descriptor
    must be a regular file, and /proc/self/fd/N (the path the kernel has for the opened
    file, whatever a swapped parent directory did) must still lie inside a media root.
    Every later reader opens /proc/self/fd/N, i.e. this very file.
    """
    path = resolve_source(name, roots)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise JobError(
            ErrorCode.SOURCE_MISSING, f"{name!r} disappeared while opening", {"source": name}
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_allowed(name, "was replaced by a symlink while opening") from exc
        raise JobError(
            ErrorCode.SOURCE_UNREADABLE,
            f"{name!r} cannot be opened: {exc.strerror}",
            {"source": name},
        ) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_allowed(name, "is not a regular file")
        real = Path(f"/proc/self/fd/{fd}").readlink()
        if not any(real.is_relative_to(root.resolve()) for root in roots):
            raise _not_allowed(name, "was moved outside the media roots while opening")
    except BaseException:
        os.close(fd)
        raise
    return real, fd


def close_sources(sources: dict[str, Source]) -> None:
    for source in sources.values():
        if source.fd is not None:
            with contextlib.suppress(OSError):
                os.close(source.fd)


def shown_sources(job: ExportJob) -> tuple[ExportJob, dict[str, str]]:
    """The job with each remote source renamed as it may be shown (a URL without its
    query, where a presigned URL keeps its signature), and the map back to the names in
    the job. Planning, messages, warnings and the preflight only ever see shown names; only
    JobRemotes.open uses the real one. Two URLs that differ only in their query get
    distinct shown names."""
    names: dict[str, str] = {}
    taken: dict[str, str] = {}  # real name -> shown name

    def shown(name: str) -> str:
        if not is_remote(name):
            return name
        if name in taken:
            return taken[name]
        base = candidate = shown_name(name)
        number = 2
        while candidate in names:
            candidate, number = f"{base} ({number})", number + 1
        names[candidate], taken[name] = name, candidate
        return candidate

    update: dict[str, Any] = {
        "angles": [a.model_copy(update={"source": shown(a.source)}) for a in job.angles]
    }
    if isinstance(job.audio, ExternalAudio):
        update["audio"] = job.audio.model_copy(update={"source": shown(job.audio.source)})
    if job.watermark is not None and job.watermark.image is not None:
        update["watermark"] = job.watermark.model_copy(update={"image": shown(job.watermark.image)})
    if not names:
        return job, {}
    return job.model_copy(update=update), names


def audio_sources(job: ExportJob) -> set[str]:
    """Sources whose audio the job needs (an angle used for video may lack audio)."""
    if isinstance(job.audio, ExternalAudio):
        ambient = job.audio.ambient
        return {job.audio.source} | ({job.angle(ambient.angle).source} if ambient else set())
    if isinstance(job.audio, FollowAudio):
        return {a.source for a in job.angles}
    angle = job.audio_angle
    return {job.angle(angle).source} if angle else set()


def inspect_sources(
    job: ExportJob, roots: list[Path], used_angles: set[str], remote: JobRemotes | None = None
) -> dict[str, Source]:
    """Resolve and probe every source the job uses, keyed by its name in the job.

    A remote name (s3://, https://) is opened through `remote` (the daemon's gateway, after
    its allow-lists); without it every remote name is refused (source_not_allowed). The
    caller closes `remote`'s sources (JobRemotes.close) as it closes the local ones."""
    needed_video = {job.angle(a).source for a in used_angles}
    needed_audio = audio_sources(job)
    if isinstance(job.audio, FollowAudio):
        needed_audio = needed_video
    out: dict[str, Source] = {}
    try:
        for name in sorted(needed_video | needed_audio):
            out[name] = _inspect(
                job, name, roots, name in needed_video, name in needed_audio, remote
            )
        if job.watermark is not None and job.watermark.image is not None:
            out[job.watermark.image] = _inspect_image(job.watermark.image, roots, remote)
    except BaseException:
        close_sources(out)
        raise
    return out


def _open_remote(name: str, remote: JobRemotes | None) -> tuple[RemoteMedia, int]:
    if remote is None:
        raise not_enabled(name)
    return remote.open(name)


def _inspect(
    job: ExportJob,
    name: str,
    roots: list[Path],
    video: bool,
    audio: bool,
    remote: JobRemotes | None,
) -> Source:
    """Open, probe and (for angles) index one source; its descriptor is closed on failure.
    A remote source is read through the gateway: probed by range, its index from the MP4's
    moov read by range (else a scan of its packets)."""
    read: MediaLocation
    fd: int | None = None
    if is_remote(name):
        read, size = _open_remote(name, remote)
        path = Path(name)
    else:
        path, fd = open_source(name, roots)
        read, size = Path(f"/proc/self/fd/{fd}"), 0
    try:
        info = probe(read, decode=video, name=name)
        if video and not info.has_video:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{name!r} has no video stream", {"source": name}
            )
        if audio and not info.has_audio:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA,
                f"{name!r} has no audio stream",
                {"source": name, "audio": job.audio.mode},
            )
        index = _video_index(read, size, name, fd) if video else None
        # The audio stream's own span: a file lasts as its longest stream (issue 11).
        span = scan_audio(read, name=name) if audio else None
        if index is not None and not index.packets:
            raise JobError(
                ErrorCode.UNSUPPORTED_MEDIA, f"{name!r} has no video packets", {"source": name}
            )
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    remote_media = read if isinstance(read, RemoteMedia) else None
    return Source(name, path, info, index, fd, span, remote=remote_media)


def _video_index(read: MediaLocation, size: int, name: str, fd: int | None) -> VideoIndex:
    """Every video packet: for an MP4/MOV from its sample tables (a remote one read by
    range, no full download; a local one through its descriptor: the moov and a few bytes
    a keyframe, not every packet, issue 18); otherwise, or when they cannot be used, by
    demuxing every packet."""
    options = {"protocol_whitelist": reader_protocols(read)}
    try:
        if isinstance(read, RemoteMedia):
            index = mp4_video_index(http_fetch(read.url), size, options, KEYFRAME_READERS)
        elif fd is not None:
            index = mp4_video_index(fd_fetch(fd), os.fstat(fd).st_size, options, readers=1)
        else:
            index = None
    except Exception:
        # The index is a shortcut: whatever stops it (a malformed moov, a read the
        # gateway cut short: http.client.IncompleteRead, struct.error, ...), the scan
        # below gives the demuxer's own verdict, and a read error the gateway recorded
        # then explains the failure (kind.py).
        index = None
    if index is not None:
        return index
    return scan_video(read, name=name)


def non_reference_packets(source: Source, packets: list[int]) -> frozenset[int]:
    """Which of `packets` (decode indices) are non-reference pictures, from a few bytes of
    each sample of a local MP4/MOV, read through its descriptor (smart.py drops them from a
    part's warm-up). None is known of a remote source, or of one whose index came from a
    scan (no sample positions), or whose samples share a position (crafted tables: a drop
    by position would take the others too), or that may be interlaced: every packet is
    then kept."""
    index = source.index
    if source.fd is None or source.remote is not None or index is None:
        return frozenset()
    if source.info.video_codec != "h264":  # another codec's headers mean something else
        return frozenset()
    if len({p.pos for p in index.packets}) != len(index.packets):
        return frozenset()
    try:
        config = AvcConfig.parse(source.info.extradata or b"")
        # Field pictures (interlaced) carry a nal_ref_idc each, and only a sample's first
        # slice is read: a source that may code fields drops nothing, nor one whose
        # parameter sets are in its samples (avc3), where that cannot be known up front.
        if not config.sps or not all(frame_mbs_only(sps) for sps in config.sps):
            return frozenset()
    except ValueError:
        return frozenset()
    length_size = config.length_size
    at = {index.packets[i].pos: i for i in packets if index.packets[i].pos >= 0}
    samples = [(pos, index.packets[i].size) for pos, i in at.items()]
    return frozenset(at[pos] for pos in non_reference(fd_fetch(source.fd), samples, length_size))


def _inspect_image(name: str, roots: list[Path], remote: JobRemotes | None) -> Source:
    """The watermark: opened like any source, then checked as a PNG (watermark.py)."""
    if is_remote(name):
        media, size = _open_remote(name, remote)
        try:
            head = http_fetch(media.url)(0, 24) if size >= 24 else b""
        except (OSError, http.client.HTTPException) as exc:  # the gateway's error explains it
            raise JobError(
                ErrorCode.SOURCE_UNREADABLE, f"{name!r} cannot be read", {"source": name}
            ) from exc
        info = check_image(media, size, head, name)
        return Source(name, Path(name), info, None, None, remote=media)
    path, fd = open_source(name, roots)
    try:
        info = probe_image(fd, name)
    except BaseException:
        os.close(fd)
        raise
    return Source(name, path, info, None, fd)


def probe_image(fd: int, name: str) -> MediaInfo:
    """Check the opened file is a PNG we will overlay; its size. Raises source_unreadable."""
    return check_image(Path(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size, os.pread(fd, 24, 0), name)


def check_image(location: MediaLocation, size: int, head: bytes, name: str) -> MediaInfo:
    """Check that the source (of `size` bytes, starting with `head`) is a PNG we will
    overlay; its size. Raises source_unreadable."""

    def refuse(why: str) -> JobError:
        return JobError(
            ErrorCode.SOURCE_UNREADABLE,
            f"{name!r} cannot be used as a watermark: {why}",
            {"source": name, "allowedFormats": ["png"]},
        )

    if size > MAX_IMAGE_BYTES:
        raise refuse(f"{size} bytes is over the limit of {MAX_IMAGE_BYTES}")
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise refuse("it is not a PNG image")
    # The size from the header, checked before anything is decoded (no decompression bomb).
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise refuse(f"{width}x{height} is not within 1-{MAX_IMAGE_SIDE} pixels per side")
    options = {"protocol_whitelist": reader_protocols(location), "format_whitelist": IMAGE_DEMUXER}
    try:
        with av.open(reader_url(location), format=IMAGE_DEMUXER, options=options) as c:
            frame = next(c.decode(video=0), None)
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise refuse(f"it does not decode ({type(exc).__name__})") from exc
    if frame is None or (frame.width, frame.height) != (width, height):
        raise refuse("it does not decode to the size its header gives")
    pix_fmt = frame.format.name
    return MediaInfo(
        duration=0.0,
        format_name=IMAGE_DEMUXER,
        video_codec="png",
        width=width,
        height=height,
        pix_fmt=pix_fmt,
    )
