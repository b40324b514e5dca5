"""Hostile media inside a media root, with real ffmpeg: files that point ffmpeg at other
files or at the network, links that leave the root, links swapped in after validation.

A canary file with a secret lies OUTSIDE the media root; every export that tries to reach it
must fail with a precise code, and no output, status (error message and details), log or
file in the job folder may contain the secret.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from export_support import FakeContext

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export import ExportJob
from spooler.export import sources as sources_module
from spooler.export.commands import PlanPaths
from spooler.export.plan import plan_export
from spooler.export.sources import Source, inspect_sources, open_source
from spooler.kinds import parse_job
from spooler.media import probe, scan_video

SECRET = b"CANARY-5e1f0c7d-do-not-leak"


class Site:
    """A media root with one good clip, and a canary outside it."""

    def __init__(self, base: Path, media_root: Path) -> None:
        self.root = base / "root"
        self.outside = base / "outside"
        self.root.mkdir(parents=True)
        self.outside.mkdir(parents=True)
        self.canary = self.outside / "canary.txt"
        self.canary.write_bytes(SECRET + b"\n")
        # A real clip OUTSIDE the root too: a link to it must not be followed either.
        self.outside_clip = self.outside / "outside.mp4"
        shutil.copy(media_root / "red.mp4", self.outside_clip)
        shutil.copy(media_root / "green.mp4", self.root / "cam1.mp4")

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def site(tmp_path: Path, media_root: Path) -> Site:
    return Site(tmp_path / "site", media_root)


def export_job(source: str, *, mode: str = "reencode", **extra: Any) -> dict[str, Any]:
    return {
        "angles": [{"id": "cam1", "source": "cam1.mp4"}, {"id": "x", "source": source}],
        "segments": [
            {"angle": "cam1", "start": 0, "end": 1},
            {"angle": "x", "start": 1, "end": 2},
        ],
        "mode": mode,
        **extra,
    }


def run(site: Site, job_dir: Path, ffmpeg: str, job: dict[str, Any]) -> tuple[FakeContext, Any]:
    """Run the job (parsed from JSON bytes, as the daemon does); (context, JobError|None)."""
    job_dir.mkdir()
    settings = Settings(media_roots=[site.root], spool_dir=job_dir.parent / "spool")
    ctx = FakeContext(job_dir, settings, ffmpeg)
    try:
        spec, kind = parse_job(json.dumps(job).encode())
        kind.run(spec, ctx)
    except JobError as exc:
        return ctx, exc
    return ctx, None


def assert_no_canary(ctx: FakeContext, error: JobError | None) -> None:
    seen = [ctx.log.getvalue().encode(), json.dumps(ctx.preflight).encode()]
    seen += [json.dumps(w).encode() for w in ctx.warnings]
    if error is not None:
        seen.append(json.dumps({"message": error.message, "details": error.details}).encode())
    for path in ctx.job_dir.rglob("*"):
        if path.is_file():
            seen.append(path.read_bytes())
    for blob in seen:
        assert SECRET not in blob


HLS = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # (a) HLS playlists pointing at the canary, at a file:// URL of it, at the network
        ("cam2.mp4", HLS + "#EXTINF:2.0,\n{canary}\n#EXT-X-ENDLIST\n"),
        ("cam2b.mp4", HLS + "#EXTINF:2.0,\nfile://{canary}\n#EXT-X-ENDLIST\n"),
        ("cam2c.mp4", HLS + "#EXTINF:2.0,\nhttp://127.0.0.1:1/x.ts\n#EXT-X-ENDLIST\n"),
        # ... and one with the extension that makes libavformat detect HLS by name
        ("cam2d.m3u8", HLS + "#EXTINF:2.0,\n{canary}\n#EXT-X-ENDLIST\n"),
        # (b) an ffconcat script listing the canary (and a real clip outside the root)
        ("cam3.mp4", "ffconcat version 1.0\nfile '{canary}'\nfile '{outside_clip}'\n"),
        ("sub/cam3.ffconcat", "ffconcat version 1.0\nfile '{outside_clip}'\n"),
        # ffmetadata and a subtitle file: text formats outside the allow-list
        ("cam4.mp4", ";FFMETADATA1\ntitle={canary}\n"),
        ("cam5.mp4", "WEBVTT\n\n00:00.000 --> 00:02.000\n{canary}\n"),
    ],
)
def test_media_that_points_elsewhere_is_refused_at_probe(
    site: Site, tmp_path: Path, ffmpeg: str, name: str, text: str
) -> None:
    # Given a file inside the root that would make a demuxer open other files or URLs
    site.write(name, text.format(canary=site.canary, outside_clip=site.outside_clip))
    # When an export uses it as an angle
    ctx, error = run(site, tmp_path / "job", ffmpeg, export_job(name))
    # Then it fails before ffmpeg runs, as unreadable media, and nothing leaked
    assert error is not None and error.code is ErrorCode.SOURCE_UNREADABLE, error
    assert "allowed format" in error.message and error.details["allowedFormats"]
    assert ctx.commands == [] and ctx.published == []
    assert_no_canary(ctx, error)


def test_external_audio_playlist_is_refused(site: Site, tmp_path: Path, ffmpeg: str) -> None:
    site.write("lav.wav", HLS + f"#EXTINF:2.0,\n{site.canary}\n#EXT-X-ENDLIST\n")
    job = {
        "angles": [{"id": "cam1", "source": "cam1.mp4"}],
        "segments": [{"angle": "cam1", "start": 0, "end": 1}],
        "audio": {"mode": "external", "source": "lav.wav"},
    }
    ctx, error = run(site, tmp_path / "job", ffmpeg, job)
    assert error is not None and error.code is ErrorCode.SOURCE_UNREADABLE
    assert_no_canary(ctx, error)


def test_an_image_pattern_name_is_a_plain_file_name(
    site: Site, tmp_path: Path, ffmpeg: str, media_root: Path
) -> None:
    # Given frames that an image2 pattern would pick up, and a PNG named like the pattern
    for i in range(3):
        shutil.copy(site.outside_clip, site.root / f"img{i:03d}.mp4")
    done = os.system(
        f"{ffmpeg} -v error -y -f lavfi -i color=c=red:s=32x32:d=0.1 -frames:v 1 "
        f"'{site.root}/img%03d.png'"
    )
    assert done == 0
    # When "img%03d.png" (a literal name: ffmpeg wrote img001.png) and a PNG renamed .mp4 are used
    shutil.copy(site.root / "img001.png", site.root / "still.mp4")
    for name, code in (
        ("img%03d.mp4", ErrorCode.SOURCE_MISSING),  # never expanded to img000.mp4 ...
        ("img001.png", ErrorCode.SOURCE_UNREADABLE),  # image demuxers are not allowed
        ("still.mp4", ErrorCode.SOURCE_UNREADABLE),
    ):
        ctx, error = run(
            site, tmp_path / f"job-{name.replace('%', 'pct')}", ffmpeg, export_job(name)
        )
        assert error is not None and error.code is code, (name, error)
        assert_no_canary(ctx, error)


@pytest.mark.parametrize("target", ["canary", "outside_clip", "outside_dir"])
def test_a_symlink_leaving_the_root_is_refused(
    site: Site, tmp_path: Path, ffmpeg: str, target: str
) -> None:
    # (c) links out of the root: to the canary, to real media, through a linked folder
    if target == "outside_dir":
        (site.root / "day").symlink_to(site.outside)
        name = "day/outside.mp4"
    else:
        (site.root / "link.mp4").symlink_to(getattr(site, target))
        name = "link.mp4"
    ctx, error = run(site, tmp_path / "job", ffmpeg, export_job(name))
    assert error is not None and error.code is ErrorCode.SOURCE_NOT_ALLOWED
    assert "outside the media roots" in error.message
    assert_no_canary(ctx, error)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_special_files_are_refused(site: Site, tmp_path: Path, ffmpeg: str, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(site.root / "cam9.mp4")
    elif kind == "device":
        (site.root / "cam9.mp4").symlink_to("/dev/zero")  # a device, through a link
    else:
        (site.root / "cam9.mp4").mkdir()
    _, error = run(site, tmp_path / "job", ffmpeg, export_job("cam9.mp4"))
    assert error is not None and error.code is ErrorCode.SOURCE_NOT_ALLOWED, error


def test_a_link_to_a_name_with_a_newline_is_refused(
    site: Site, tmp_path: Path, ffmpeg: str
) -> None:
    # Given a real clip inside the root whose NAME would inject an ffconcat directive
    evil = "x.mp4'\nfile 'canary.mp4'\n#"
    shutil.copy(site.root / "cam1.mp4", site.root / evil)
    (site.root / "cam2.mp4").symlink_to(evil)
    ctx, error = run(site, tmp_path / "job", ffmpeg, export_job("cam2.mp4"))
    assert error is not None and error.code is ErrorCode.SOURCE_NOT_ALLOWED
    assert "control characters" in error.message
    assert_no_canary(ctx, error)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("-i.mp4", "angles[1].source"),
        ("day/-f.mp4", "angles[1].source"),
        ("cam\n1.mp4", "angles[1].source"),
        ("concat:cam1.mp4|cam1.mp4", "angles[1].source"),
        ("subfile:,,start,0,end,0,,:cam1.mp4", "angles[1].source"),
        ("file:/etc/passwd", "angles[1].source"),
        ("http://user@127.0.0.1:1/x.mp4", "angles[1].source"),
        ("../outside/canary.txt", "angles[1].source"),
        ("/etc/passwd", "angles[1].source"),
    ],
)
def test_hostile_names_are_rejected_by_validation(
    site: Site, tmp_path: Path, ffmpeg: str, name: str, path: str
) -> None:
    ctx, error = run(site, tmp_path / "job", ffmpeg, export_job(name))
    assert error is not None and error.code is ErrorCode.INVALID_JOB
    assert error.details["errors"][0]["path"] == path
    assert error.details["errors"][0]["code"] == "source_path"
    assert ctx.commands == []


@pytest.mark.parametrize(
    "name", ["http://127.0.0.1:1/x.mp4", "https://example.com/x.mp4?sig=1", "s3://media/x.mp4"]
)
def test_remote_names_are_refused_before_any_read_by_default(
    site: Site, tmp_path: Path, ffmpeg: str, name: str
) -> None:
    # A remote source has a valid shape, but the shipped settings allow no remote source
    ctx, error = run(site, tmp_path / "job", ffmpeg, export_job(name))
    assert error is not None and error.code is ErrorCode.SOURCE_NOT_ALLOWED
    assert "s3.allowed_url_hosts" in error.message and "sig=1" not in error.message
    assert ctx.commands == []


@pytest.mark.parametrize("name", ['it\'s "cam" [1], x.mp4', "kamera-ü 東京.mp4", "a b/c;d|e.mp4"])
def test_odd_but_legal_names_work(site: Site, tmp_path: Path, ffmpeg: str, name: str) -> None:
    # Quotes, unicode, shell and ffmpeg metacharacters inside the root: read as plain files
    (site.root / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(site.root / "cam1.mp4", site.root / name)
    ctx, error = run(site, tmp_path / "job", ffmpeg, export_job(name))
    assert error is None and len(ctx.published) == 1
    assert_no_canary(ctx, error)


# --- ffmpeg's own restrictions, even if probing were fooled -------------------------------


@pytest.mark.parametrize("hostile", ["ffconcat", "hls"])
def test_ffmpeg_itself_refuses_nested_scripts(
    site: Site, tmp_path: Path, ffmpeg: str, hostile: str
) -> None:
    # Given a plan whose source looks like real media to the planner but is a script on disk
    # that reaches outside the root: an ffconcat script with a relative name (which even a
    # "safe" nested concat would accept) through a link, or an HLS playlist (by extension)
    (site.root / "out").symlink_to(site.outside)
    if hostile == "ffconcat":
        name = "cam3.mp4"
        site.write(name, "ffconcat version 1.0\nfile 'out/outside.mp4'\n")
    else:
        name = "cam3.m3u8"
        site.write(name, HLS + "#EXTINF:2.0,\nout/outside.mp4\n#EXT-X-ENDLIST\n")
    real = site.root / "cam1.mp4"
    fake = Source(name, site.root / name, probe(real, decode=True), scan_video(real))
    spec = ExportJob.model_validate(
        {
            "angles": [{"id": "x", "source": name}],
            "switches": [{"at": 0, "angle": "x"}],
            "end": 1,
            "mode": "reencode",
        }
    )
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    ctx = FakeContext(job_dir, Settings(media_roots=[site.root]), ffmpeg)
    paths = PlanPaths(
        ctx.temp_path("out.mp4"),
        ctx.temp_path("a.mp4"),
        ctx.temp_path("g.txt"),
        tuple(ctx.temp_path(f"{i}.ffconcat") for i in range(3)),
    )
    plan = plan_export(spec, {name: fake}, ctx.settings, paths)
    # When ffmpeg runs it
    command = plan.commands[0]
    for path, text in command.files.items():
        path.write_text(text)
    with pytest.raises(JobError) as info:
        ctx.run_ffmpeg(command.args, step="encode", expected_seconds=1.0)
    # Then ffmpeg refuses to open the nested file with a demuxer outside the allow-list
    assert info.value.code is ErrorCode.FFMPEG_FAILED
    log = ctx.log.getvalue()
    assert "Format not on whitelist" in log and "Impossible to open" in log
    assert not paths.output.exists() or paths.output.stat().st_size < 1000
    assert_no_canary(ctx, info.value)


# --- the swap race (issue 6): a source replaced after validation --------------------------


def test_a_file_swapped_for_a_link_while_opening_is_refused(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given resolution that passes, then the file is replaced by a link out of the root
    original = sources_module.resolve_source

    def resolve_then_swap(name: str, roots: list[Path]) -> Path:
        path = original(name, roots)
        path.unlink()
        path.symlink_to(site.canary)
        return path

    monkeypatch.setattr(sources_module, "resolve_source", resolve_then_swap)
    with pytest.raises(JobError) as info:
        open_source("cam1.mp4", [site.root])
    assert info.value.code is ErrorCode.SOURCE_NOT_ALLOWED
    assert "replaced by a symlink" in info.value.message


def test_a_parent_folder_swapped_for_a_link_while_opening_is_refused(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given day/cam.mp4 inside the root, and a folder outside with the same file name
    (site.root / "day").mkdir()
    shutil.copy(site.root / "cam1.mp4", site.root / "day" / "cam.mp4")
    shutil.copy(site.outside_clip, site.outside / "cam.mp4")
    original = sources_module.resolve_source

    def resolve_then_swap(name: str, roots: list[Path]) -> Path:
        path = original(name, roots)
        (site.root / "day").rename(site.root / "old-day")
        (site.root / "day").symlink_to(site.outside)  # O_NOFOLLOW only covers the last part
        return path

    monkeypatch.setattr(sources_module, "resolve_source", resolve_then_swap)
    with pytest.raises(JobError) as info:
        open_source("day/cam.mp4", [site.root])
    assert info.value.code is ErrorCode.SOURCE_NOT_ALLOWED
    assert "moved outside the media roots" in info.value.message


def test_a_swap_after_validation_does_not_change_what_ffmpeg_reads(
    site: Site, tmp_path: Path, ffmpeg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job whose source is swapped for a link to the canary right after probing
    original = sources_module.inspect_sources

    def inspect_then_swap(job: ExportJob, roots: list[Path], used: set[str], *more: Any) -> Any:
        found = original(job, roots, used, *more)
        victim = site.root / "cam1.mp4"
        victim.rename(site.root / "moved.mp4")
        victim.symlink_to(site.canary)
        return found

    monkeypatch.setattr("spooler.export.kind.inspect_sources", inspect_then_swap)
    job = {
        "angles": [{"id": "cam1", "source": "cam1.mp4"}],
        "segments": [{"angle": "cam1", "start": 0, "end": 2}],
        "mode": "reencode",
    }
    ctx, error = run(site, tmp_path / "job", ffmpeg, job)
    # Then ffmpeg read the file that was validated (through /proc/self/fd/N), not the link
    assert error is None and len(ctx.published) == 1
    assert "/proc/self/fd/" in ctx.log.getvalue()
    assert str(site.root / "cam1.mp4") not in ctx.log.getvalue()
    assert_no_canary(ctx, error)
    # And the descriptors were closed afterwards
    assert not any(
        Path(f"/proc/self/fd/{fd}").resolve() == (site.root / "moved.mp4")
        for fd in map(int, os.listdir("/proc/self/fd"))
        if Path(f"/proc/self/fd/{fd}").exists()
    )


def test_inspect_closes_descriptors_when_a_source_fails(site: Site) -> None:
    site.write("bad.mp4", "not media")
    spec = ExportJob.model_validate(export_job("bad.mp4"))
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(JobError):
        inspect_sources(spec, [site.root], {"cam1", "x"})
    assert set(os.listdir("/proc/self/fd")) <= before | {str(n) for n in range(3)}


# --- the watermark image: a source like the angles, and a PNG only -----------------------


def watermark_job(image: str) -> dict[str, Any]:
    return {
        "angles": [{"id": "cam1", "source": "cam1.mp4"}],
        "segments": [{"angle": "cam1", "start": 0, "end": 1}],
        "mode": "reencode",
        "watermark": {"image": image},
    }


@pytest.mark.parametrize("target", ["canary", "outside_png", "outside_dir"])
def test_a_watermark_link_leaving_the_root_is_refused(
    site: Site, tmp_path: Path, ffmpeg: str, target: str
) -> None:
    # Given a real PNG outside the root, reached through a link (to it, or to its folder)
    png = site.outside / "logo.png"
    done = os.system(f"{ffmpeg} -v error -y -f lavfi -i color=c=red:s=32x32 -frames:v 1 '{png}'")
    assert done == 0
    if target == "outside_dir":
        (site.root / "brand").symlink_to(site.outside)
        name = "brand/logo.png"
    else:
        (site.root / "logo.png").symlink_to(site.canary if target == "canary" else png)
        name = "logo.png"
    ctx, error = run(site, tmp_path / "job", ffmpeg, watermark_job(name))
    assert error is not None and error.code is ErrorCode.SOURCE_NOT_ALLOWED
    assert "outside the media roots" in error.message
    assert ctx.commands == []
    assert_no_canary(ctx, error)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("logo.png", HLS + "#EXTINF:2.0,\n{canary}\n#EXT-X-ENDLIST\n"),
        ("logo2.png", "ffconcat version 1.0\nfile '{canary}'\n"),
        ("img%03d.png", "not an image"),
    ],
)
def test_a_watermark_that_is_a_script_is_refused(
    site: Site, tmp_path: Path, ffmpeg: str, name: str, text: str
) -> None:
    site.write(name, text.format(canary=site.canary))
    ctx, error = run(site, tmp_path / "job", ffmpeg, watermark_job(name))
    assert error is not None and error.code is ErrorCode.SOURCE_UNREADABLE
    assert "not a PNG image" in error.message and error.details["allowedFormats"] == ["png"]
    assert ctx.commands == []
    assert_no_canary(ctx, error)


@pytest.mark.parametrize("name", ["../outside/logo.png", "/etc/passwd", "concat:a.png|b.png"])
def test_a_watermark_path_outside_the_roots_is_rejected_by_validation(
    site: Site, tmp_path: Path, ffmpeg: str, name: str
) -> None:
    ctx, error = run(site, tmp_path / "job", ffmpeg, watermark_job(name))
    assert error is not None and error.code is ErrorCode.INVALID_JOB
    assert error.details["errors"][0]["path"] == "watermark.image"
    assert error.details["errors"][0]["code"] == "source_path"
    assert ctx.commands == []


def test_ffmpeg_reads_the_watermark_only_as_a_png(site: Site, tmp_path: Path, ffmpeg: str) -> None:
    # Given a real PNG in the root: the export works, and its input allows png_pipe only
    done = os.system(
        f"{ffmpeg} -v error -y -f lavfi -i color=c=red:s=32x32 -frames:v 1 '{site.root}/l.png'"
    )
    assert done == 0
    ctx, error = run(site, tmp_path / "job", ffmpeg, watermark_job("l.png"))
    assert error is None and len(ctx.published) == 1
    args = ctx.commands[0]
    at = args.index("-filter_complex") - 8  # the last input: the watermark
    assert args[at : at + 7] == [
        "-f", "png_pipe", "-protocol_whitelist", "file", "-format_whitelist", "png_pipe", "-i",
    ]  # fmt: skip
    assert args[at + 7].startswith("file:/proc/self/fd/")
    assert_no_canary(ctx, error)
