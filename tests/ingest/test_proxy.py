"""The proxy kind with real ffmpeg: time-exact against 30, 29.97 and variable-rate
sources, structure read back from the packets, waveform and poster, manifest."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import pytest
from ingest_media import phone_clip
from mediagen import Clip, make_clip, read_frames

from spooler.ingest.proxyverify import read_timecode, structure_problems, top_level_boxes
from spooler.media import probe, scan_video, stream_ends


def _manifest(derived: Path, source: str) -> dict:
    return json.loads((derived / "manifests" / f"{source}.json").read_text())


@pytest.mark.parametrize(
    ("clip", "rate"),
    [
        (Clip("red", fps=30, seconds=2.0, bframes=2), Fraction(30)),
        (Clip("green", fps=30, seconds=2.0, bframes=0), Fraction(30)),
    ],
)
def test_constant_rate_source_keeps_every_frame(run_kind, roots, ffmpeg, clip, rate) -> None:
    # Given a constant-rate source with B-frames and a 2 s GOP
    media, derived = roots
    make_clip(ffmpeg, clip, media).rename(media / "cam.mp4")
    # When it is proxied
    ctx = run_kind({"kind": "proxy", "source": "cam.mp4"})
    # Then the proxy has the same frames at the same times, in a short no-B GOP
    manifest = _manifest(derived, "cam.mp4")
    proxy = derived / manifest["proxy"]
    source_frames = read_frames(media / "cam.mp4")
    proxy_frames = read_frames(proxy)
    assert [n for _, n, _ in proxy_frames] == [n for _, n, _ in source_frames]
    assert [t for *_, t in proxy_frames] == pytest.approx([t for *_, t in source_frames])
    assert manifest["frameCount"] == len(source_frames) == round(clip.seconds * clip.fps)
    assert Fraction(manifest["frameRate"]) == rate
    ends = stream_ends(proxy)
    assert ends.video_end == pytest.approx(clip.seconds, abs=1e-6)
    index = scan_video(proxy)
    assert structure_problems(index, 15) == []
    assert all(p.pts == p.dts for p in index.packets)  # no B-frames
    info = probe(proxy)
    assert (info.profile, info.pix_fmt, info.sample_rate, info.channels) == (
        "High", "yuv420p", 48000, 2,
    )  # fmt: skip
    assert top_level_boxes(proxy).index("moov") < top_level_boxes(proxy).index("mdat")
    assert ctx.published[0].path == "manifest.json"
    assert json.loads((ctx.job_dir / "manifest.json").read_text()) == manifest


def test_ntsc_rate_and_timecode(run_kind, roots, ffmpeg) -> None:
    media, derived = roots
    src = media / "ntsc.mov"
    from ingest_media import run

    run(ffmpeg, "-f", "lavfi", "-i", "testsrc2=s=96x54:r=30000/1001:d=2",
        "-f", "lavfi", "-i", "sine=f=440:d=2:sample_rate=44100", "-ac", "1",
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-c:a", "aac",
        "-timecode", "01:02:03;04", str(src))  # fmt: skip
    run_kind({"kind": "proxy", "source": "ntsc.mov", "gopFrames": 1})
    manifest = _manifest(derived, "ntsc.mov")
    proxy = derived / manifest["proxy"]
    assert manifest["frameRate"] == "30000/1001"
    assert manifest["frameCount"] == len(scan_video(src).packets) == len(scan_video(proxy).packets)
    assert stream_ends(proxy).video_end == pytest.approx(stream_ends(src).video_end, abs=1e-6)
    assert all(p.keyframe for p in scan_video(proxy).packets)  # gopFrames 1: all-intra
    assert manifest["timecode"] == read_timecode(proxy) == "01:02:03;04"
    assert manifest["audioChannels"] == 1 and probe(proxy).channels == 1


def test_variable_rate_source_shows_the_frame_shown_at_each_time(run_kind, roots, ffmpeg) -> None:
    # Given a phone-like source: wobbling timestamps and a dropped frame every 7
    media, derived = roots
    phone_clip(ffmpeg, media / "phone.mp4")
    source = read_frames(media / "phone.mp4")
    off_grid = [t for *_, t in source if abs(t * 30 - round(t * 30)) > 0.1]
    assert len(off_grid) > len(source) / 4  # really variable: many frames between slots
    # When it is proxied
    run_kind({"kind": "proxy", "source": "phone.mp4"})
    # Then the proxy is constant 30 fps, lasts as long, and its frame k shows the last
    # source frame whose time is at or before k/30 (1 ms slack)
    manifest = _manifest(derived, "phone.mp4")
    proxy = derived / manifest["proxy"]
    assert manifest["constantRateSource"] is False and manifest["frameRate"] == "30/1"
    frames = read_frames(proxy)
    index = scan_video(media / "phone.mp4")
    src_end = stream_ends(media / "phone.mp4").video_end
    assert len(frames) == manifest["frameCount"] == math.ceil((src_end - 0.001) * 30)
    assert stream_ends(proxy).video_end == pytest.approx(src_end, abs=1 / 30)
    for k, (_, number, t) in enumerate(frames):
        assert t == pytest.approx(k / 30, abs=1e-6)
        shown = [n for _, n, ts in source if ts <= k / 30 + 0.001]
        assert number == shown[-1], f"proxy frame {k}"
    assert len(index.packets) < len(frames)  # dropped frames were held, not lost


def test_rotation_applied_never_upscaled_waveform_and_poster(run_kind, roots, ffmpeg) -> None:
    media, derived = roots
    clip = Clip("yellow", width=160, height=96, fps=25, seconds=2.0, rotation=90, mono=True)
    make_clip(ffmpeg, clip, media).rename(media / "rot.mp4")
    run_kind({"kind": "proxy", "source": "rot.mp4", "height": 1080,
              "waveform": {"bits": 16, "pixelsPerSecond": 50}})  # fmt: skip
    manifest = _manifest(derived, "rot.mp4")
    proxy = derived / manifest["proxy"]
    info = probe(proxy, decode=True)
    # shown as 96x160 (portrait), not upscaled to 1080, no rotation left to apply
    assert (manifest["width"], manifest["height"]) == (96, 160) == (info.width, info.height)
    assert info.rotation == 0
    wave = json.loads((derived / manifest["waveform"]["path"]).read_text())
    assert {k: wave[k] for k in ("version", "channels", "bits", "sample_rate")} == {
        "version": 2, "channels": 1, "bits": 16, "sample_rate": 16000,
    }  # fmt: skip
    assert wave["samples_per_pixel"] == 320 and wave["length"] == pytest.approx(100, abs=2)
    assert len(wave["data"]) == 2 * wave["length"]
    # the clip's tone bursts: loud in the first pixel of each second, silent mid-second
    data = wave["data"]
    assert data[1] > 8000 and abs(data[2 * 25 + 1]) < 200
    poster = derived / manifest["poster"]
    with av.open(str(poster)) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (96, 160)


def test_missing_source_is_source_missing(run_kind) -> None:
    from spooler.errors import JobError

    with pytest.raises(JobError) as info:
        run_kind({"kind": "proxy", "source": "nope/cam.mp4"})
    assert info.value.code == "source_missing" and "nope/cam.mp4" in info.value.message
