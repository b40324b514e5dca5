"""ffmpeg encoder arguments: which encoder per codec, its quality and speed defaults, and
its thread count (pure). Shared by the export modes and the testpattern kind.
"""

from __future__ import annotations

from fractions import Fraction

from spooler.export.audiograph import SAMPLE_RATE
from spooler.export.commands import rate_text
from spooler.export.deliverables import Rendition
from spooler.export.models import ExportJob

ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
DEFAULT_CRF = {"h264": 20, "hevc": 24, "vp9": 32, "av1": 35}
DEFAULT_PRESET = {"h264": "medium", "hevc": "medium", "vp9": "4", "av1": "8"}


def encoder_threads(threads: int) -> list[str]:
    """-threads N, or nothing for 0 (ffmpeg's own choice)."""
    return ["-threads", str(threads)] if threads else []


def shared_threads(configured: int, encoders: int, cores: int) -> int:
    """Threads for each of `encoders` video encoders in one ffmpeg (renditions): the
    operator's setting if any; ffmpeg's own choice (0) for a lone encoder; else an equal
    share of the cores. Each x264 left to itself takes 1.5x the cores in frame threads:
    with a 1080p and a 720p encoder on 2 cores that cost ~8 % more CPU for the same job
    (3 and 13 % in two same-run pairs; issue 18, bench/renditions_bench.py --threads)."""
    if configured or encoders <= 1:
        return configured
    return max(1, cores // encoders)


def audio_encoder(job: ExportJob | Rendition) -> list[str]:
    out = job.output if isinstance(job, ExportJob) else job
    bitrate = f"{out.audio_bitrate_kbps}k"
    if out.audio_codec_value == "opus":
        return ["-c:a", "libopus", "-b:a", bitrate, "-ar", str(SAMPLE_RATE)]
    return ["-c:a", "aac", "-b:a", bitrate, "-ar", str(SAMPLE_RATE)]


def video_encoder(job: ExportJob | Rendition, codec: str, fps: Fraction, threads: int) -> list[str]:
    out = job.output if isinstance(job, ExportJob) else job
    container = job.output.container if isinstance(job, ExportJob) else job.container_value
    args = ["-c:v", ENCODERS[codec]]
    preset = out.preset or DEFAULT_PRESET[codec]
    if out.video_bitrate_kbps is not None:
        quality = ["-b:v", f"{out.video_bitrate_kbps}k"]
    else:
        crf = out.crf if out.crf is not None else DEFAULT_CRF[codec]
        quality = ["-crf", str(crf)] + (["-b:v", "0"] if codec == "vp9" else [])
    if codec in ("h264", "hevc"):
        args += ["-preset", preset, *quality]
        if codec == "hevc":
            args += ["-x265-params", "log-level=error"]
            if container in ("mp4", "mov"):
                args += ["-tag:v", "hvc1"]  # Apple players and Safari need hvc1
    elif codec == "vp9":
        args += ["-deadline", "good", "-cpu-used", preset, "-row-mt", "1", *quality]
    else:
        args += ["-preset", preset, *quality]
    return [
        *args,
        "-pix_fmt",
        "yuv420p",
        "-r",
        rate_text(fps),
        "-fps_mode",
        "cfr",
        *encoder_threads(threads),
    ]
