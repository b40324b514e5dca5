"""Every output of an export verified before ANY is published: a job publishes all of its
outputs or, failing, none (the daemon removes the temporary files of a failed attempt).

The media checks are media.verify_media (the one verifier, which the testpattern kind
uses too), with the plan's duration and tolerance; images are checked by stills.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spooler.export.commands import Plan
from spooler.media import verify_media
from spooler.mediainfo import MediaInfo
from spooler.status import OutputInfo


@dataclass(frozen=True)
class Ready:
    """A verified temporary file and what the status will say about it."""

    temp: Path
    info: OutputInfo


def verify_output(
    path: Path,
    plan: Plan,
    *,
    size: tuple[int, int] | None,
    want_video: bool = True,
    want_audio: bool,
    name: str,
) -> MediaInfo:
    """One planned output checked against the plan (see media.verify_media)."""
    return verify_media(
        path,
        expected_seconds=float(plan.duration),
        tolerance=plan.tolerance,
        want_audio=want_audio,
        want_video=want_video,
        size=size,
        name=name,
    )


def shown_size(info: MediaInfo) -> tuple[int | None, int | None]:
    """Width and height as players show them (a 90° rotation swaps the stored ones): what
    the status reports for every output, a stream copy's included (issue 11)."""
    return info.display_size or (None, None)


def verify_renditions(plan: Plan) -> list[Ready]:
    ready: list[Ready] = []
    for out in plan.extra_outputs:
        size = (out.width, out.height) if out.width and out.height else None
        info = verify_output(
            out.temp,
            plan,
            size=size,
            want_video=size is not None,
            want_audio=out.audio,
            name=out.name,
        )
        ready.append(
            Ready(
                out.temp,
                OutputInfo(
                    path=out.name,
                    role=out.role,
                    size_bytes=out.temp.stat().st_size,
                    duration_seconds=info.duration,
                    width=shown_size(info)[0],
                    height=shown_size(info)[1],
                    mime_type=out.mime_type,
                ),
            )
        )
    return ready
