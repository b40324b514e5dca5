"""Test media whose every frame says which angle and which source frame it is.

The top band holds the frame number in binary (16 blocks, white = 1), the rest of the
picture is the angle's colour, so a decoded frame gives (angle, source frame) back
without OCR. A sine tone per angle lets audio be told apart too.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

BITS = 16

# Colours as (U, V) chroma: far apart so compression never confuses them.
COLOURS: dict[str, tuple[int, int]] = {
    "red": (90, 240),
    "green": (54, 34),
    "blue": (240, 110),
    "yellow": (16, 146),
}
TONES: dict[str, int] = {"red": 440, "green": 660, "blue": 880, "yellow": 550}


@dataclass(frozen=True)
class Clip:
    colour: str
    width: int = 160
    height: int = 120
    fps: int = 30
    seconds: float = 4.0
    gop_seconds: float = 2.0
    bframes: int = 3
    rotation: int = 0  # display rotation written into the file (degrees, counter-clockwise)
    jitter: float = 0.0  # variable frame rate: timestamps wobble by this much (s) ...
    drop_every: int = 0  # ... and every n-th frame is missing (a phone under load)
    audio: bool = True
    mono: bool = False
    sample_rate: int = 48000
    audio_seconds: float | None = None  # audio shorter (or longer) than the video

    def name(self) -> str:
        return (
            f"{self.colour}_{self.width}x{self.height}_{self.fps}_{self.seconds:g}"
            f"_g{self.gop_seconds:g}_b{self.bframes}_r{self.rotation}"
            f"_j{self.jitter:g}d{self.drop_every}"
            f"_{'a' if self.audio else 'n'}{'m' if self.mono else 's'}{self.sample_rate}"
            + (f"_as{self.audio_seconds:g}" if self.audio_seconds is not None else "")
            + ".mp4"
        )


def make_clip(ffmpeg: str, clip: Clip, folder: Path) -> Path:
    out = folder / clip.name()
    if out.exists():
        return out
    u, v = COLOURS[clip.colour]
    block = clip.width // BITS
    band = max(8, clip.height // 8)
    lum = (
        f"if(lt(Y,{band}),if(lt(X,{block * BITS}),"
        f"255*mod(floor(N/pow(2,floor(X/{block}))),2),128),128)"
    )
    video = (
        f"color=c=black:s={clip.width}x{clip.height}:r={clip.fps}:d={clip.seconds},"
        f"geq=lum='{lum}':cb={u}:cr={v}"
    )
    if clip.jitter or clip.drop_every:
        video += f",setpts='(N/{clip.fps}+{clip.jitter}*sin(N))/TB'"
        if clip.drop_every:
            video += f",select='not(eq(mod(n,{clip.drop_every}),3))'"
    # A 50 ms tone burst at every whole second of source time: audio carries its time too.
    tone = TONES[clip.colour]
    audio = (
        f"aevalsrc='if(lt(mod(t\\,1)\\,0.05)\\,0.5*sin(2*PI*{tone}*t)\\,0)'"
        f":s={clip.sample_rate}:d={clip.audio_seconds or clip.seconds}"
    )
    tmp = out.with_suffix(".tmp.mp4")
    args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", video]
    if clip.audio:
        args += ["-f", "lavfi", "-i", audio]
    args += [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "12",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(round(clip.gop_seconds * clip.fps)),
        "-keyint_min",
        str(round(clip.gop_seconds * clip.fps)),
        "-sc_threshold",
        "0",
        "-bf",
        str(clip.bframes),
        # Keep the wobbling timestamps as they are (the default would make them constant).
        *(["-fps_mode", "passthrough"] if clip.jitter or clip.drop_every else []),
    ]
    if clip.audio:
        args += ["-c:a", "aac", "-b:a", "96k", "-ac", "1" if clip.mono else "2"]
    args += ["-f", "mp4", str(tmp)]
    subprocess.run(args, check=True)
    if clip.rotation:
        rotated = out.with_suffix(".rot.mp4")
        subprocess.run(
            [
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-display_rotation",
                str(clip.rotation),
                "-i",
                str(tmp),
                "-c",
                "copy",
                str(rotated),
            ],
            check=True,
        )
        tmp.unlink()
        tmp = rotated
    tmp.rename(out)
    return out


def read_frames(path: Path, bits: int = BITS) -> list[tuple[str, int, float]]:
    """(colour, source frame number, pts seconds) of every decoded frame, display order."""
    import av

    out: list[tuple[str, int, float]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            out.append((colour_of(frame), number_of(frame, bits), float(frame.time or 0.0)))
    return out


def _sample(plane: object, x: int, y: int) -> int:
    data = bytes(plane)  # type: ignore[call-overload]
    return data[y * plane.line_size + x]  # type: ignore[attr-defined]


def colour_of(frame: object) -> str:
    """The angle colour at the picture's centre (averaged over a small square of chroma)."""
    width, height = frame.width, frame.height  # type: ignore[attr-defined]
    planes = frame.planes  # type: ignore[attr-defined]
    u_data, v_data = bytes(planes[1]), bytes(planes[2])
    stride_u, stride_v = planes[1].line_size, planes[2].line_size
    cx, cy = width // 4, height // 4
    us = [u_data[(cy + dy) * stride_u + cx + dx] for dy in range(-2, 3) for dx in range(-2, 3)]
    vs = [v_data[(cy + dy) * stride_v + cx + dx] for dy in range(-2, 3) for dx in range(-2, 3)]
    u, v = sum(us) / len(us), sum(vs) / len(vs)
    return min(COLOURS, key=lambda c: (COLOURS[c][0] - u) ** 2 + (COLOURS[c][1] - v) ** 2)


def number_of(frame: object, bits: int = BITS) -> int:
    """The frame number written in the top band (-1 if the band is not where expected)."""
    width, height = frame.width, frame.height  # type: ignore[attr-defined]
    plane = frame.planes[0]  # type: ignore[attr-defined]
    data, stride = bytes(plane), plane.line_size
    band = max(8, height // 8)
    block = width // bits
    value = 0
    for bit in range(bits):
        x = bit * block + block // 2
        if data[(band // 2) * stride + x] > 192:
            value |= 1 << bit
    return value


def make_burst_wav(ffmpeg: str, folder: Path, at: float, seconds: float) -> Path:
    """Silence with one 100 ms 1 kHz burst at source time `at` (an external recorder)."""
    out = folder / f"burst_{at:g}_{seconds:g}.wav"
    if not out.exists():
        expr = f"if(between(t\\,{at}\\,{at + 0.1})\\,0.5*sin(2*PI*1000*t)\\,0)"
        subprocess.run(
            [
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"aevalsrc='{expr}':s=48000:d={seconds}",
                "-ac",
                "2",
                str(out),
            ],
            check=True,
        )
    return out


def audio_onsets(path: Path, threshold: float = 0.1, gap: float = 0.3) -> list[float]:
    """Times (s, from the first audio sample) at which sound starts after >= `gap` silence."""
    import array

    import av

    onsets: list[float] = []
    last_loud = -1e9
    position = 0
    rate = 48000
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                samples = array.array("f", bytes(out.planes[0]))[: out.samples]
                for i, value in enumerate(samples):
                    if abs(value) > threshold:
                        t = (position + i) / rate
                        if t - last_loud >= gap:
                            onsets.append(t)
                        last_loud = t
                position += out.samples
    return onsets
