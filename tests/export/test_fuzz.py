"""Fuzzing validation and planning (see fuzz_jobs.py for the strategy and the invariants).

The `ci` profile (default) runs 200 examples; HYPOTHESIS_PROFILE=long runs 20,000. The
bench soak runs the same checks for a set time (fuzz_jobs.run_fuzz).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fuzz_jobs import (
    FONT,
    PATHS,
    SETTINGS,
    TEXT_FILE,
    Checker,
    check_job,
    fabricated_non_reference,
    fabricated_sources,
    job_bytes,
    stills_plan,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from spooler.export import teeout
from spooler.export.models import ExportJob
from spooler.export.plan import plan_export
from spooler.export.textmark import escape

PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@settings(PROFILE)
@given(job_bytes(), st.integers(0, 3))
def test_no_job_escapes_validation_or_the_allowed_paths(raw: bytes, variant: int) -> None:
    outcome = check_job(raw, variant)
    assert outcome.violations == [], (raw, outcome.violations)


def test_the_checker_sees_a_bad_plan() -> None:
    # Given a valid plan, then tampered with the ways an injection would show
    spec = ExportJob.model_validate(
        {
            "angles": [{"id": "a", "source": "cam1.mp4"}, {"id": "b", "source": "cam2.mp4"}],
            "segments": [
                {"angle": "a", "start": 0, "end": 5},
                {"angle": "b", "start": 5, "end": 9},
            ],
            "mode": "reencode",
        }
    )
    sources = fabricated_sources(spec, 1)
    plan = plan_export(spec, sources, SETTINGS, PATHS)
    assert Checker(sources).check(plan) == []
    command = plan.commands[0]
    listing = command.files[PATHS.lists[0]]
    for bad in (
        listing.replace("file:/proc/self/fd/", "file:/etc/", 1),
        listing.replace("option format_whitelist", "option format_whitelisT", 1),
        listing + "file 'file:/media/root/x.mp4'\n",
        listing.replace("outpoint", "file_packet_meta x y\noutpoint", 1),
    ):
        command.files[PATHS.lists[0]] = bad
        assert Checker(sources).check(plan), bad
    command.files[PATHS.lists[0]] = listing
    args = list(command.args)
    for i, replacement in ((-1, "file:/tmp/out.mp4"), (0, "concat:a|b"), (0, "/etc/passwd")):
        command.args[i] = replacement
        assert Checker(sources).check(plan), replacement
        command.args[:] = args
    at = args.index("-format_whitelist")
    command.args[at + 1] = "concat,hls"
    assert Checker(sources).check(plan)


def test_the_checker_reads_a_smart_plans_drops_and_lists() -> None:
    # Given a smart plan whose parts' warm-ups drop packets, its entries probing nothing
    spec = ExportJob.model_validate(
        {
            "angles": [
                {"id": "a", "source": "cam1.mp4"},
                {"id": "b", "source": "cam1.mp4", "syncOffset": 20},
            ],
            "segments": [
                {"angle": "a", "start": 0, "end": 5.5},
                {"angle": "b", "start": 5.5, "end": 9.3},
            ],
            "mode": "smart",
        }
    )
    sources = fabricated_sources(spec, 3)  # opened by fd, 30 fps with B-frames
    plan = plan_export(spec, sources, SETTINGS, PATHS, fabricated_non_reference)
    assert plan.mode == "smart"
    assert Checker(sources).check(plan) == []
    encode = next(c for c in plan.commands if c.step.startswith("encode"))
    at = encode.args.index("-bsf:v")
    drops = encode.args[at + 1]
    assert drops.startswith("noise=drop=") and "eq(pos\\,48)" not in drops
    listing = next(text for path, text in encode.files.items() if path in PATHS.lists)
    assert "option codec_whitelist none\n" in listing
    # When the drop expression says more than positions, or the list more than the refusal
    for bad in (
        drops + "+gt(1\\,0)",
        drops.replace("eq(pos", "eq(size", 1),
        drops.replace("noise=drop=", "noise=amount=9:drop=", 1),
        drops + ",dump_extra",
    ):
        encode.args[at + 1] = bad
        assert Checker(sources).check(plan), bad
    encode.args[at + 1] = drops
    path = next(path for path in encode.files if path in PATHS.lists)
    for bad_list in (
        listing.replace("codec_whitelist none", "codec_whitelist h264", 1),
        listing.replace(
            "option codec_whitelist none",
            "option codec_whitelist none\noption codec_whitelist none",
            1,
        ),
    ):
        encode.files[path] = bad_list
        assert Checker(sources).check(plan), bad_list
    encode.files[path] = listing
    # And as an output's option rather than an input's
    moved = encode.args[:at] + encode.args[at + 2 :]
    encode.args[:] = [*moved[:-1], "-bsf:v", drops, moved[-1]]
    assert Checker(sources).check(plan)


def _one_angle_job(*renditions: dict[str, object], **more: object) -> dict[str, object]:
    return {
        "angles": [{"id": "a", "source": "cam1.mp4"}],
        "segments": [{"angle": "a", "start": 0, "end": 9}],
        "mode": "reencode",
        "renditions": list(renditions),
        **more,
    }


SMALL = {"name": "small", "size": {"mode": "height", "height": 360}}


def test_the_checker_sees_a_rendition_or_still_written_elsewhere() -> None:
    # Given a valid job with two renditions, a poster and a storyboard: no violation
    job = _one_angle_job(
        SMALL,
        {"name": "audio", "audioOnly": True, "audioBitrateKbps": 96},
        poster={"format": "webp"},
        storyboard={"interval": 2},
    )
    raw = json.dumps(job).encode()
    assert check_job(raw).violations == []
    spec = ExportJob.model_validate(job)
    sources = fabricated_sources(spec, 1)
    plan = plan_export(spec, sources, SETTINGS, PATHS)
    args = plan.commands[0].args
    assert [a for a in args if a.startswith("file:") and Path(a[5:]) in PATHS.renditions] == [
        f"file:{PATHS.renditions[0]}",
        f"file:{PATHS.renditions[1]}",
    ]
    # When a rendition's output is moved out of the job's temporary paths: caught
    at = args.index(f"file:{PATHS.renditions[0]}")
    args[at] = "file:/tmp/elsewhere.mp4"
    assert Checker(sources).check(plan)
    args[at] = f"file:{PATHS.renditions[0]}"
    thumbs = stills_plan(spec, plan)
    assert thumbs is not None
    checker = Checker(sources)
    checker.check_args(thumbs.command.args, set(), frozenset({PATHS.output}))
    assert checker.problems == []
    thumbs.command.args[-1] = "file:/tmp/poster.webp"
    checker.check_args(thumbs.command.args, set(), frozenset({PATHS.output}))
    assert checker.problems


def test_the_checker_reads_a_tee_outputs_slaves() -> None:
    # Given renditions that share the main output's sound: one tee output, no violation
    job = _one_angle_job(SMALL, {"name": "audio", "audioOnly": True})
    assert check_job(json.dumps(job).encode()).violations == []
    spec = ExportJob.model_validate(job)
    sources = fabricated_sources(spec, 1)
    plan = plan_export(spec, sources, SETTINGS, PATHS)
    args = plan.commands[0].args
    assert args[-3:-1] == ["-f", "tee"]
    tee = args[-1]
    # When a slave writes elsewhere, or with other options (a muxer, onfail): caught
    for tampered in (
        tee.replace(teeout.tee_escape(f"file:{PATHS.renditions[0]}"), "file\\:/tmp/x.mp4"),
        tee.replace("[f=ipod", "[f=null"),
        tee.replace("[f=mp4:", "[onfail=ignore:f=mp4:", 1),
        tee + "|[f=mp4:select=\\'a\\']file\\:/tmp/y.mp4",
    ):
        assert tampered != tee
        args[-1] = tampered
        assert Checker(sources).check(plan), tampered
    args[-1] = tee
    assert not Checker(sources).check(plan)


def test_the_checker_sees_a_tampered_drawtext() -> None:
    # Given a valid plan with a hostile text watermark: its drawtext passes the checker
    spec = ExportJob.model_validate(
        {
            "angles": [{"id": "a", "source": "cam1.mp4"}],
            "segments": [{"angle": "a", "start": 0, "end": 5}],
            "watermark": {"text": "x:fontfile=/etc/passwd %{pts}", "start": 1},
        }
    )
    sources = fabricated_sources(spec, 0)
    plan = plan_export(spec, sources, SETTINGS, PATHS)
    assert Checker(sources).check(plan) == []
    command = plan.commands[0]
    at = command.args.index("-filter_complex") + 1
    graph = command.args[at]
    assert command.files[TEXT_FILE] == "x:fontfile=/etc/passwd %{pts}"
    font = graph[graph.index("fontfile=") + 9 : graph.index(":textfile=")]
    assert font == escape(FONT) != FONT  # the configured font, escaped for the graph
    # When it is tampered with, each way is caught
    for bad in (
        graph.replace(font, "/etc/fonts/x.ttf"),
        graph.replace(font, font.replace("F.ttf", "G.ttf")),
        graph.replace(f"textfile={TEXT_FILE}", "textfile=/etc/passwd"),
        graph.replace(f"textfile={TEXT_FILE}", f"textfile={TEXT_FILE}x"),
        graph.replace("expansion=none", "expansion=normal"),
        graph.replace(":expansion=none", ""),
        graph.replace("expansion=none", "expansion=none:text=%{pts}"),
        graph.replace("expansion=none", "expansion=none:textfile=/etc/passwd"),
        graph.replace("drawtext=", "drawtext@x="),
        graph.replace("drawtext=", "drawtext =text=x:"),
        graph.replace("format=yuv420p[vout]", "drawtext,format=yuv420p[vout]"),
        graph.replace("format=yuv420p[vout]", "drawtext=text=hi,format=yuv420p[vout]"),
        graph.replace(f"textfile={TEXT_FILE}", f"textfile='{TEXT_FILE}'\\:x"),
    ):
        assert bad != graph
        command.args[at] = bad
        assert Checker(sources).check(plan), bad


def test_hostile_job_files_are_rejected_not_crashed() -> None:
    for raw in (
        b"",
        b"\xff",
        b"[]",
        b"null",
        b'{"angles": NaN}',
        b'{"a": 1, "a": 2}',
        b"[" * 100_000,
        json.dumps({"angles": [{"id": "a", "source": "concat:x|y"}]}).encode(),
    ):
        outcome = check_job(raw)
        assert not outcome.valid and outcome.violations == []
