"""`spooler demo`: the main job end to end on embedded defaults.

Generates a short sample multicam shoot (three angles that look different, each with
sound, plus an external mic track) into the media root, starts a real daemon process,
submits an export written as switch points, follows its progress, prints where the output
and its status are, and stops the daemon cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.ffmpeg import find_ffmpeg
from spooler.fsutil import atomic_write_bytes
from spooler.kinds import KINDS
from spooler.layout import SpoolLayout

DEMO_SECONDS = 12
_ANGLES = {
    # name: (video source, tone in Hz)
    "wide": ("testsrc2=size=640x360:rate=30", 220),
    "close": ("smptehdbars=size=640x360:rate=30,hue=h=90", 330),
    "side": ("mandelbrot=size=640x360:rate=30", 440),
}


def generate_media(ffmpeg: str, media_dir: Path) -> dict[str, Path]:
    """Sample sources, made once: the angles start at slightly different times, like real
    cameras, which the job's sync offsets undo."""
    media_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for name, (video, tone) in _ANGLES.items():
        target = media_dir / f"{name}.mp4"
        made[name] = target
        if target.exists():
            continue
        duration = DEMO_SECONDS + 2
        text_free = f"{video},format=yuv420p"
        args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", f"{text_free}",
                "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000",
                "-t", str(duration), "-c:v", "libx264", "-preset", "veryfast", "-g", "60",
                "-c:a", "aac", "-b:a", "96k", "-shortest", str(target) + ".part.mp4"]  # fmt: skip
        subprocess.run(args, check=True)
        Path(str(target) + ".part.mp4").rename(target)
    mic = media_dir / "mic.m4a"
    made["mic"] = mic
    if not mic.exists():
        args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.2:sample_rate=48000",
                "-t", str(DEMO_SECONDS + 2), "-c:a", "aac", "-b:a", "96k",
                str(mic) + ".part.m4a"]  # fmt: skip
        subprocess.run(args, check=True)
        Path(str(mic) + ".part.m4a").rename(mic)
    return made


def demo_job(media_root: Path, media: dict[str, Path]) -> dict[str, Any]:
    if "export" not in KINDS:
        return {"kind": "testpattern", "durationSeconds": DEMO_SECONDS, "width": 640,
                "height": 360, "fps": 30, "metadata": {"demo": True}}  # fmt: skip
    rel = {name: str(path.relative_to(media_root)) for name, path in media.items()}
    return {
        "kind": "export",
        "metadata": {"demo": True, "project": "sample multicam shoot"},
        "angles": [
            {"id": "wide", "source": rel["wide"], "syncOffset": 0.0},
            {"id": "close", "source": rel["close"], "syncOffset": 0.5},
            {"id": "side", "source": rel["side"], "syncOffset": 1.0},
        ],
        "switches": [
            {"at": 0.0, "angle": "wide"},
            {"at": 3.2, "angle": "close"},
            {"at": 6.0, "angle": "side"},
            {"at": 8.4, "angle": "wide"},
        ],
        "end": float(DEMO_SECONDS - 2),
        "audio": {"mode": "external", "source": rel["mic"], "offset": 0.0, "gainDb": 0.0},
        "output": {
            "container": "mp4",
            "videoCodec": "h264",
            "size": {"mode": "height", "height": 360},
            "fileName": "demo-export.mp4",
        },
        "mode": "reencode",
    }


def run_demo(settings: Settings, config: Path | None) -> int:
    from spooler.cli import wait_for_job  # the CLI's own progress display

    ffmpeg = find_ffmpeg(settings.ffmpeg_path)
    media_root = settings.media_roots[0]
    print(f"1/4 generating sample media in {media_root}/demo ...", flush=True)
    media = generate_media(ffmpeg, media_root / "demo")
    layout = SpoolLayout(settings.spool_dir)
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "spooler"]
    if config is not None:
        cmd += ["--config", str(config)]
    log_path = settings.spool_dir.parent / "demo-daemon.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"2/4 starting the daemon (spool {settings.spool_dir}, log {log_path})", flush=True)
    with log_path.open("ab") as log:
        daemon = subprocess.Popen([*cmd, "run"], env={**env, "SPOOLER_LOG_FORMAT": "json"},
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        job_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        layout.inbox.mkdir(parents=True, exist_ok=True)
        job = demo_job(media_root, media)
        atomic_write_bytes(layout.inbox_job(job_id), json.dumps(job, indent=2).encode())
        print(f"3/4 submitted {job_id} ({job['kind']}) -> {layout.inbox_job(job_id)}", flush=True)
        code = wait_for_job(layout, job_id, timeout=600)
        print("4/4 stopping the daemon", flush=True)
        return code
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=settings.shutdown_grace_seconds + 10)
        except subprocess.TimeoutExpired:
            daemon.kill()
