"""Renditions: more outputs of the same edit from the same decoded frames (pure).

The reencode graph ends in [vout] (the finished main frame, after cuts, transitions and
overlays) and [aout]. Each video rendition takes a `split` branch of [vout] and scales it:
scaling the finished frame rather than each angle's normalised frame keeps one graph for
the edit whatever the number of renditions, and anything drawn onto the main frame (a
watermark, a transition) appears in every rendition. An audio-only rendition takes an
`asplit` branch of [aout]. All outputs belong to ONE ffmpeg command: the sources are read,
decoded and cut once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from spooler.export.commands import MUXERS, PlannedOutput
from spooler.export.deliverables import RENDITION_MIME, Rendition, output_names
from spooler.export.models import ExportJob
from spooler.export.output import ExactSize, HeightSize


@dataclass(frozen=True)
class Branch:
    """One rendition's pads in the graph and its planned file."""

    rendition: Rendition
    video: str | None  # None: audio only
    audio: str | None  # None: the job has no audio
    output: PlannedOutput


def rendition_size(rendition: Rendition, width: int, height: int) -> tuple[int, int]:
    """The rendition's frame, from the main output's frame (always even)."""
    size = rendition.size
    if isinstance(size, ExactSize):
        return size.width, size.height
    if isinstance(size, HeightSize):
        scaled = Fraction(width * size.height, height)
        return 2 * math.floor(scaled / 2 + Fraction(1, 2)), size.height
    return width, height


def _scale(rendition: Rendition, width: int, height: int) -> str | None:
    """Filters from the main frame to the rendition's; None when it is the same size."""
    target = rendition_size(rendition, width, height)
    if target == (width, height):
        return None
    w, h = target
    size = rendition.size
    if isinstance(size, ExactSize) and w * height != h * width:
        if size.fit == "crop":
            return f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1"
        return (
            f"scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1"
        )
    return f"scale={w}:{h},setsar=1"


def split_outputs(
    job: ExportJob,
    chains: list[str],
    video: str,
    audio: str | None,
    width: int,
    height: int,
    paths: tuple[Path, ...],
    *,
    split_audio: bool = True,
) -> tuple[str, str | None, list[Branch]]:
    """Append the split/asplit and scale chains; return the main output's video and audio
    labels and one Branch per rendition (in job order). Without renditions: unchanged.
    `split_audio` False: the sound is encoded once for every output (teeout.py), so it is
    not split; each Branch's `audio` is then the one audio label."""
    if not job.renditions:
        return video, audio, []
    names = [name for path, name in output_names(job) if path[0] == "renditions"]
    with_video = [r for r in job.renditions if not r.audio_only]
    vpads = [f"[vr{i}]" for i in range(len(with_video) + 1)]
    if with_video:
        chains.append(f"{video}split={len(vpads)}{''.join(vpads)}")
        video = vpads[0]
    apads = [f"[ar{i}]" for i in range(len(job.renditions) + 1)]
    if audio is not None and split_audio:
        chains.append(f"{audio}asplit={len(apads)}{''.join(apads)}")
        audio = apads[0]
    elif audio is not None:
        apads = [audio] * len(apads)
    branches: list[Branch] = []
    vnext = 1
    for index, rendition in enumerate(job.renditions):
        vlabel: str | None = None
        dims: tuple[int | None, int | None] = (None, None)
        if not rendition.audio_only:
            vlabel = vpads[vnext]
            vnext += 1
            scale = _scale(rendition, width, height)
            if scale is not None:
                chains.append(f"{vlabel}{scale}[vs{index}]")
                vlabel = f"[vs{index}]"
            dims = rendition_size(rendition, width, height)
        alabel = apads[index + 1] if audio is not None else None
        planned = PlannedOutput(
            name=names[index],
            temp=paths[index],
            role="rendition",
            mime_type=RENDITION_MIME[rendition.container_value],
            width=dims[0],
            height=dims[1],
            audio=alabel is not None,
        )
        branches.append(Branch(rendition, vlabel, alabel, planned))
    return video, audio, branches


def muxer_args(rendition: Rendition, path: Path) -> list[str]:
    container = rendition.container_value
    args = ["-map_metadata", "-1"]
    if container in ("mp4", "mov", "m4a"):
        args += ["-movflags", "+faststart"]
    # ipod is libavformat's m4a muxer (the M4A brand players expect).
    return [*args, "-f", "ipod" if container == "m4a" else MUXERS[container], f"file:{path}"]
