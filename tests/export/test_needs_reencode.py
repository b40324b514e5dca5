"""The one rule of what needs re-encoding: the same findings refuse mode copy at validation
and give auto and smart their reasons (pure, no media)."""

from __future__ import annotations

from typing import Any

import pytest

from spooler.export import needs_reencode
from spooler.export.models import ExportJob

ANGLES = [{"id": "cam1", "source": "a.mp4"}, {"id": "cam2", "source": "b.mp4"}]
CROSS = {"type": "crossfade", "duration": 1.0}  # half a second each side of the cut


def job(cuts: list[tuple[str, float, float, dict[str, Any] | None]], **extra: Any) -> ExportJob:
    segments = [
        {"angle": a, "start": s, "end": e, **({"transition": t} if t else {})}
        for a, s, e, t in cuts
    ]
    return ExportJob.model_validate({"angles": ANGLES, "segments": segments, **extra})


@pytest.mark.parametrize(
    "cuts, extra, reasons",
    [
        pytest.param([("cam1", 0, 4, None), ("cam2", 4, 8, None)], {}, [], id="hard-cuts"),
        pytest.param(
            [("cam1", 0, 4, None), ("cam2", 4, 8, CROSS)],
            {},
            ["segments[1].transition (crossfade) needs re-encoding"],
            id="own-transition",
        ),
        pytest.param(
            [("cam1", 0, 4, None), ("cam2", 4, 8, None), ("cam1", 8, 12, None)],
            {"transition": CROSS},
            ["transition (crossfade) needs re-encoding", "and 1 more transition(s)"],
            id="job-default-at-every-cut",
        ),
        pytest.param(
            # The window 3.5-4.5 s ends where the range starts: none of it is exported.
            [("cam1", 0, 4, None), ("cam2", 4, 8, None), ("cam1", 8, 12, None)],
            {"transition": CROSS, "range": {"start": 4.5, "end": 7.5}},
            [],
            id="windows-outside-the-range",
        ),
        pytest.param(
            [("cam1", 0, 4, None), ("cam1", 4, 8, CROSS)],
            {},
            [],
            id="same-angle-is-no-cut",
        ),
        pytest.param(
            [("cam1", 0, 4, None), ("cam2", 4, 8, CROSS)],
            {"watermark": {"text": "preview"}, "renditions": [{"name": "small"}]},
            [
                "segments[1].transition (crossfade) needs re-encoding",
                "a watermark needs re-encoding",
                "renditions need the decoded frames",
            ],
            id="all-three",
        ),
    ],
)
def test_reasons(
    cuts: list[tuple[str, float, float, dict[str, Any] | None]],
    extra: dict[str, Any],
    reasons: list[str],
) -> None:
    spec = job(cuts, **extra)
    assert needs_reencode.reasons(spec) == reasons
    # auto copies exactly when nothing is found, so copy validates exactly then too.
    copy = spec.model_copy(update={"mode": "copy"})
    refusal = needs_reencode.copy_refusal(copy)
    assert (refusal is None) == (reasons == [])
    assert needs_reencode.copy_refusal(spec) is None  # auto is never refused


def test_copy_refusal_is_the_first_finding_at_its_json_path() -> None:
    spec = job(
        [("cam1", 0, 4, None), ("cam2", 4, 8, CROSS)],
        watermark={"text": "preview"},
        mode="auto",
    ).model_copy(update={"mode": "copy"})
    refusal = needs_reencode.copy_refusal(spec)
    assert refusal is not None
    [error] = refusal.errors(include_url=False)
    assert (error["type"], error["loc"]) == ("needs_reencode", ("segments", 1, "transition"))
    assert error["msg"] == "a crossfade cannot be stream-copied (use mode reencode or auto)"
