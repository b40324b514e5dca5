"""Pure tests of the renditions plan and the storyboard layout: no ffmpeg, no disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plan import IPPP, PATHS, SETTINGS, job

from spooler.errors import JobError
from spooler.export.commands import PlanPaths
from spooler.export.deliverables import StoryboardSpec
from spooler.export.models import ExportJob
from spooler.export.plan import plan_export
from spooler.export.thumbnails import plan_thumbnails, storyboard_tiles_of, vtt_text

TEMPS = tuple(Path(f"/jobs/j/.r{i}") for i in range(3))
WITH_RENDITIONS = PlanPaths(PATHS.output, PATHS.audio, PATHS.graph, PATHS.lists, TEMPS)


RENDITIONS = [
    {"name": "720p", "size": {"mode": "height", "height": 720}},
    {"name": "square", "size": {"mode": "exact", "width": 640, "height": 640, "fit": "crop"}},
    {"name": "audio", "audioOnly": True},
]


def test_renditions_split_the_finished_frame_in_one_command() -> None:
    # Given an edit that auto would copy (every cut clean), with three renditions
    spec = job([("cam1", 0, 2), ("cam2", 2, 4)], renditions=RENDITIONS)
    # When it is planned
    plan = plan_export(spec, IPPP, SETTINGS, WITH_RENDITIONS)
    # Then it is ONE reencode command whose graph splits [vout], not the sound ...
    assert plan.mode == "reencode" and "renditions" in plan.reason
    (command,) = plan.commands
    graph = command.args[command.args.index("-filter_complex") + 1]
    assert "[vout]split=3[vr0][vr1][vr2]" in graph
    assert "asplit" not in graph
    assert "[vr1]scale=1280:720,setsar=1[vs0]" in graph
    assert "crop=640:640" in graph
    # ... encoded once for all four files, the slaves of one tee output (teeout.py), each
    # video encoder's options naming its stream
    assert command.args.count("-c:a") == 1
    assert [a for a in command.args if a.startswith("-c:v")] == ["-c:v:0", "-c:v:1", "-c:v:2"]
    assert command.args[-3:-1] == ["-f", "tee"]
    slaves = command.args[-1].split("|")
    assert slaves == [
        f"[f=mp4:movflags=+faststart:select=\\'{select}\\']file\\:{path}"
        for select, path in (
            ("v:0,a", PATHS.output),
            ("v:1,a", TEMPS[0]),
            ("v:2,a", TEMPS[1]),
        )
    ] + [f"[f=ipod:movflags=+faststart:select=\\'a\\']file\\:{TEMPS[2]}"]
    facts = [(o.name, o.width, o.height, o.audio, o.mime_type) for o in plan.extra_outputs]
    assert facts == [
        ("export-720p.mp4", 1280, 720, True, "video/mp4"),
        ("export-square.mp4", 640, 640, True, "video/mp4"),
        ("export-audio.m4a", None, None, True, "audio/mp4"),
    ]


def test_renditions_asking_for_other_sound_get_their_own_outputs_and_encoders() -> None:
    # Given the same renditions, the audio-only one at another bitrate
    other = [*RENDITIONS[:2], {**RENDITIONS[2], "audioBitrateKbps": 96}]
    spec = job([("cam1", 0, 2), ("cam2", 2, 4)], renditions=other)
    # When it is planned
    (command,) = plan_export(spec, IPPP, SETTINGS, WITH_RENDITIONS).commands
    # Then the sound is split and encoded per output, each output a file of its own
    graph = command.args[command.args.index("-filter_complex") + 1]
    assert "[aout]asplit=4[ar0][ar1][ar2][ar3]" in graph
    assert command.args.count("-c:a") == 4 and "tee" not in command.args
    outputs = [
        b for a, b in zip(command.args, command.args[1:], strict=False) if a in ("mp4", "ipod")
    ]
    assert outputs == [f"file:{p}" for p in (PATHS.output, *TEMPS)]
    assert command.args[-3:] == ["-f", "ipod", f"file:{TEMPS[2]}"]


def test_without_renditions_the_command_is_unchanged() -> None:
    plain = plan_export(job([("cam1", 0, 2)], mode="reencode"), IPPP, SETTINGS, PATHS)
    args = plain.commands[0].args
    assert args.count("-map") == 2 and "[vout]split" not in args[args.index("-filter_complex") + 1]
    assert plain.extra_outputs == []
    assert "-threads" not in args  # one encoder: ffmpeg's own thread count


def _encoder_threads(args: list[str]) -> list[str | None]:
    """The -threads value after each -c:v (None: none before the next output's -map); in a
    tee output, -c:v:N and -threads:v:N."""
    found: list[str | None] = []
    for i, arg in enumerate(args):
        if arg.startswith("-c:v"):
            rest = args[i : args.index("-map", i) if "-map" in args[i:] else len(args)]
            threads = [r for r in rest if r.split(":", 1)[0] == "-threads"]
            found.append(rest[rest.index(threads[0]) + 1] if threads else None)
    return found


def test_video_renditions_share_the_cores_between_their_encoders() -> None:
    # Given a job with two video renditions beside the main output: three x264 encoders
    spec = job(
        [("cam1", 0, 2)],
        mode="reencode",
        renditions=[
            {"name": "720p", "size": {"mode": "height", "height": 720}},
            {"name": "360p", "size": {"mode": "height", "height": 360}},
            {"name": "audio", "audioOnly": True},
        ],
    )
    # When it is planned for 6 cores, and for 2, with ffmpeg's thread count left to
    # ffmpeg (the default)
    six = plan_export(spec, IPPP, SETTINGS, WITH_RENDITIONS, cores=6).commands[0].args
    two = plan_export(spec, IPPP, SETTINGS, WITH_RENDITIONS, cores=2).commands[0].args
    # Then each encoder gets an equal share of the cores (at least one), not 1.5x the
    # cores each
    assert _encoder_threads(six) == ["2"] * 3
    assert _encoder_threads(two) == ["1"] * 3
    # And an operator's ffmpeg_threads is kept as it is
    pinned = SETTINGS.model_copy(update={"ffmpeg_threads": 4})
    args = plan_export(spec, IPPP, pinned, WITH_RENDITIONS, cores=6).commands[0].args
    assert _encoder_threads(args) == ["4"] * 3


def test_storyboard_tiles_and_vtt() -> None:
    spec = StoryboardSpec(interval=5, columns=2, width=160)
    tiles, width, height = storyboard_tiles_of(spec, 12.5, 1920, 1080)
    assert (width, height) == (320, 180)
    assert [(t.start, t.end, t.x, t.y, t.w, t.h) for t in tiles] == [
        (0, 5, 0, 0, 160, 90),
        (5, 10, 160, 0, 160, 90),
        (10, 12.5, 0, 90, 160, 90),
    ]
    assert vtt_text(tiles, "s.jpg") == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:05.000\ns.jpg#xywh=0,0,160,90\n\n"
        "00:00:05.000 --> 00:00:10.000\ns.jpg#xywh=160,0,160,90\n\n"
        "00:00:10.000 --> 00:00:12.500\ns.jpg#xywh=0,90,160,90\n"
    )


def test_a_sprite_too_tall_is_refused_when_the_shape_is_known() -> None:
    spec = ExportJob.model_validate(
        {
            "angles": [{"id": "a", "source": "a.mp4"}],
            "segments": [{"angle": "a", "start": 0, "end": 1000}],
            "storyboard": {"interval": 1, "columns": 1, "width": 640},
        }
    )
    temps = {"export.storyboard.jpg": Path("/j/.s"), "export.storyboard.vtt": Path("/j/.v")}
    with pytest.raises(JobError, match="sprite would be 640x360000 px"):
        plan_thumbnails(spec, Path("/j/.o"), 1920, 1080, 1000.0, None, temps)
