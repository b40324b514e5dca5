"""Generated media for the ingest tests (lavfi, seconds long, tiny pictures)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run(ffmpeg: str, *args: str) -> None:
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def scene(ffmpeg: str, path: Path, seconds: float, seed: int = 1) -> Path:
    """A mono 48 kHz 'scene': noise bursts at random times over quiet room noise plus tones:
    what several microphones of one room would all hear."""
    expr = (
        f"0.6*lt(mod(t*1.7+sin(t*0.37)*3,1.0),0.06)*random({seed})"
        "+0.2*sin(2*PI*(300+200*sin(t*0.5))*t)*lt(mod(t,2.3),0.4)"
    )
    run(ffmpeg, "-f", "lavfi", "-i", f"aevalsrc='{expr}':s=48000:d={seconds}",
        "-c:a", "pcm_s16le", str(path))  # fmt: skip
    return path


def angle(
    ffmpeg: str,
    scene_wav: Path,
    out: Path,
    *,
    start: float,
    seconds: float,
    chain: str = "anull",
    noise: float = 0.0,
    video: bool = True,
) -> Path:
    """One recorder of the scene: it starts `start` s into the scene (its syncOffset against
    a recorder that started at 0 is then -start), heard through `chain`, with room noise."""
    inputs = ["-ss", f"{start}", "-t", f"{seconds}", "-i", str(scene_wav)]
    graph = f"[0:a]{chain}[s]"
    if noise:
        inputs += ["-f", "lavfi", "-i", f"anoisesrc=c=pink:a={noise}:d={seconds}:r=48000"]
        graph += ";[s][1:a]amix=inputs=2:normalize=0:duration=first[s2]"
        last = "[s2]"
    else:
        last = "[s]"
    args = [*inputs]
    if video:
        args += ["-f", "lavfi", "-i", f"color=c=gray:s=64x36:r=10:d={seconds}"]
    args += ["-filter_complex", graph, "-map", last]
    if video:
        v = 2 if noise else 1
        args += ["-map", f"{v}:v", "-c:v", "libx264", "-preset", "ultrafast"]
    args += ["-c:a", "aac", "-b:a", "96k", "-t", f"{seconds}", str(out)]
    run(ffmpeg, *args)
    return out


def phone_clip(ffmpeg: str, out: Path, *, seconds: float = 3.0, jitter: float = 0.004) -> Path:
    """A variable-rate 30 fps clip as phones write it: timestamps off the grid by up to
    `jitter` s (in a 1/90000 time base, so they survive muxing), every 7th frame dropped.
    Each frame carries its number in the top band (mediagen.read_frames decodes it)."""
    from mediagen import BITS, COLOURS

    width, height = 160, 96
    u, v = COLOURS["blue"]
    block, band = width // BITS, max(8, height // 8)
    lum = (
        f"if(lt(Y,{band}),if(lt(X,{block * BITS}),"
        f"255*mod(floor(N/pow(2,floor(X/{block}))),2),128),128)"
    )
    video = (
        f"color=c=black:s={width}x{height}:r=30:d={seconds},geq=lum='{lum}':cb={u}:cr={v},"
        f"settb=1/90000,setpts='(N/30+{jitter}*sin(N*1.3))/TB',select='not(eq(mod(n,7),3))'"
    )
    run(ffmpeg, "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", f"sine=f=500:d={seconds}:sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-bf", "0",
        "-fps_mode", "passthrough", "-enc_time_base:v", "1/90000",
        "-video_track_timescale", "90000",
        "-c:a", "aac", "-shortest", str(out))  # fmt: skip
    return out
