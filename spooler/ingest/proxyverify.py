"""Read a finished proxy back before it is published (shell: PyAV).

Frame count and duration against the plan, the structure from the packets themselves
(no B-frames, keyframe cadence), the codec settings, faststart and the timecode.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import av

from spooler.errors import ErrorCode, JobError
from spooler.ingest.proxyplan import ProxyPlan
from spooler.media import probe, scan_video, stream_ends
from spooler.mediainfo import OPEN_OPTIONS, VideoIndex


def read_timecode(path: Path) -> str | None:
    """The start timecode a camera wrote (a tmcd track or a tag), if any."""
    try:
        with av.open(f"file:{path}", options=OPEN_OPTIONS) as container:
            for stream in container.streams:
                tc = stream.metadata.get("timecode")
                if tc:
                    return str(tc)
            tc = container.metadata.get("timecode")
            return str(tc) if tc else None
    except (av.FFmpegError, OSError, ValueError):
        return None


def top_level_boxes(path: Path, limit: int = 64) -> list[str]:
    """The MP4's top-level box types in file order (faststart: moov before mdat)."""
    out: list[str] = []
    size = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= size and len(out) < limit:
            f.seek(offset)
            head = f.read(16)
            length = int.from_bytes(head[:4], "big")
            out.append(head[4:8].decode("latin-1"))
            if length == 1:
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:
                break
            if length < 8:
                break
            offset += length
    return out


def structure_problems(index: VideoIndex, gop: int) -> list[str]:
    """No B-frames (display order = decode order) and a keyframe every `gop` frames."""
    problems: list[str] = []
    pts = [p.pts for p in index.packets]
    if any(b <= a for a, b in itertools.pairwise(pts)):
        problems.append("frames are reordered (B-frames)")
    keys = [i for i, p in enumerate(index.packets) if p.keyframe]
    if not keys or keys[0] != 0:
        problems.append("does not start with a keyframe")
    gaps = [b - a for a, b in itertools.pairwise(keys)]
    if any(g != gop for g in gaps):
        problems.append(f"keyframe intervals {sorted(set(gaps))} frames, expected {gop}")
    if keys and len(index.packets) - keys[-1] > gop:
        problems.append(f"last keyframe interval over {gop} frames")
    return problems


def verify_proxy(path: Path, plan: ProxyPlan, timecode: str | None, name: str) -> float:
    """Raise verify_failed naming every problem; return the proxy's video duration."""
    info = probe(path)
    index = scan_video(path, name=name)
    ends = stream_ends(path)
    problems = structure_problems(index, plan.gop)
    rate = plan.rate
    if len(index.packets) != rate.frames:
        problems.append(f"{len(index.packets)} frames, expected {rate.frames}")
    half = 0.5 / float(rate.rate)
    if ends.video_end is None or abs(ends.video_end - rate.duration) > half:
        problems.append(f"video lasts {ends.video_end} s, expected {rate.duration:.6f} s")
    if info.video_codec != "h264" or info.pix_fmt != "yuv420p" or info.profile != "High":
        problems.append(f"video is {info.video_codec} {info.profile} {info.pix_fmt}")
    if (info.width, info.height) != plan.size or info.rotation:
        shown = f"{info.width}x{info.height} r{info.rotation}"
        problems.append(f"picture {shown}, expected {plan.size[0]}x{plan.size[1]}")
    if plan.audio_channels:
        if info.channels != plan.audio_channels or info.sample_rate != 48000:
            problems.append(f"audio {info.channels} ch {info.sample_rate} Hz")
    elif info.has_audio:
        problems.append("unexpected audio stream")
    boxes = top_level_boxes(path)
    if "moov" not in boxes or ("mdat" in boxes and boxes.index("moov") > boxes.index("mdat")):
        problems.append(f"not faststart (boxes {boxes[:6]})")
    if timecode and read_timecode(path) != timecode:
        problems.append(f"timecode {read_timecode(path)!r}, expected {timecode!r}")
    if problems:
        raise JobError(
            ErrorCode.VERIFY_FAILED,
            f"{name} failed verification: " + "; ".join(problems),
            {"probe": info.summary(), "size": path.stat().st_size},
        )
    return float(ends.video_end or 0.0)
