"""The proxy's decisions (pure): frame rate, picture size, GOP, and the one ffmpeg pass.

Time-exact by construction:
- constant-rate source: every source frame passes through unchanged in time
  (`-fps_mode passthrough`), so the proxy has the source's frame count and duration;
- variable-rate source (phones): the `fps` filter at the nominal rate with `round=up`, after
  moving every timestamp 1 ms earlier: output frame k (at k/rate) shows the last source frame
  whose time is <= k/rate, i.e. the frame a player shows at that time. The millisecond
  absorbs timestamps rounded to a millisecond time base (Matroska) without ever picking a
  frame that is shown more than 1 ms later.

GOP: short and fixed for scrubbing: a browser seeks to the keyframe before the target and
decodes forward, so a seek costs at most `gop` frames. Desktop editors' proxy presets are
all-intra (ProRes Proxy, DNxHR LB, Blender's `-g 1`); all-intra H.264 at 720p is 3-5x the
size, so the default is a keyframe every half second (15 frames at 30 fps: a few
milliseconds of decoding at 720p) and `gopFrames: 1` gives all-intra. No B-frames (decode
order = display order, so stepping backwards is cheap), scene-cut keyframes off (a fixed
cadence), closed GOPs.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from fractions import Fraction

from spooler.config import IngestSettings
from spooler.ingest.models import ProxyJob
from spooler.mediainfo import MediaInfo, VideoIndex

# The nominal rates cameras and phones record at; a variable-rate stream is resampled to
# the nearest one.
STANDARD_RATES = (
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60), Fraction(120),
)  # fmt: skip
# Frame intervals may differ by this much and still count as constant (time-base rounding).
CFR_SLACK_SECONDS = 0.0011
# The analysis copy of the sound read by the waveform step (mono, 16-bit).
PCM_RATE = 16_000
VFR_LEAD_SECONDS = 0.001


@dataclass(frozen=True)
class RateDecision:
    rate: Fraction
    constant: bool  # the source is constant-rate (passed through)
    frames: int  # frames the proxy must have
    duration: float  # seconds the proxy's video must last
    source_duration: float  # seconds the source's video lasts (first frame to last's end)


def nominal_interval(gaps: list[float]) -> float:
    """The frame interval a variable-rate stream was recorded at. A first guess, the median
    gap without the long ones of dropped frames (over 1.5x the lower quartile), counts the
    slots each gap spans; the whole span over that count is then exact to the jitter
    divided by the length, where a median would keep the jitter."""
    ordered = sorted(gaps)
    quartile = ordered[len(ordered) // 4]
    guess = statistics.median(g for g in ordered if g <= 1.5 * quartile)
    slots = sum(max(1, round(g / guess)) for g in gaps)
    return sum(gaps) / slots


def nominal_rate(interval: float) -> Fraction:
    """The standard rate nearest to a measured frame interval. Jitter cannot tell 30 from
    29.97 (0.1 % apart): phones, the variable-rate sources, record at whole rates, so a
    whole rate within 0.2 % wins."""
    measured = 1 / interval
    rate = min(STANDARD_RATES, key=lambda r: abs(float(1 / r) - interval))
    whole = Fraction(math.ceil(rate))
    if rate.denominator == 1001 and abs(float(whole) - measured) <= 0.002 * measured:
        return whole
    return rate


def decide_rate(info: MediaInfo, index: VideoIndex) -> RateDecision:
    pts = sorted(p.pts for p in index.packets)
    if not pts:
        raise ValueError("no video packets")
    first = float(pts[0] * index.time_base)
    duration = float(index.end_pts * index.time_base) - first
    gaps = [float((b - a) * index.time_base) for a, b in itertools.pairwise(pts)]
    if not gaps or max(gaps) - min(gaps) <= CFR_SLACK_SECONDS:
        rate = info.fps if info.fps else Fraction(1) / Fraction(gaps[0] if gaps else 1 / 30)
        return RateDecision(Fraction(rate), True, len(pts), duration, duration)
    rate = nominal_rate(nominal_interval(gaps))
    # Slot k (at k/rate) exists while the source shows a frame: k/rate < duration, with
    # the same millisecond of slack as the frame choice.
    frames = math.ceil((duration - VFR_LEAD_SECONDS) * rate)
    return RateDecision(rate, False, frames, float(frames / rate), duration)


def proxy_size(info: MediaInfo, height: int) -> tuple[int, int]:
    """Display size (rotation and pixel aspect applied) scaled so that its short side is
    `height`, never above the source's; both sides even (4:2:0)."""
    if info.display_size is None:
        raise ValueError("no picture size")
    w, h = info.display_size
    sar = info.sar if info.sar > 0 else Fraction(1)
    if info.rotation % 180:
        h = round(h / sar)  # the pixel aspect is along the stored width, shown vertically
    else:
        w = round(w * sar)
    short = min(w, h)
    target = min(height, short)
    scale = Fraction(target, short)

    def even(x: Fraction) -> int:
        return max(2, round(x / 2) * 2)

    return even(w * scale), even(h * scale)


def gop_frames(job: ProxyJob, rate: Fraction, settings: IngestSettings) -> int:
    wanted = job.gop_frames if job.gop_frames is not None else max(1, round(rate / 2))
    return min(wanted, settings.max_gop_frames)


@dataclass(frozen=True)
class ProxyPlan:
    rate: RateDecision
    size: tuple[int, int]
    gop: int
    height: int
    audio_channels: int | None
    args: list[str]

    def settings_key(self) -> str:
        """What makes two proxies of the same content differ (part of the object name)."""
        w, h = self.size
        return f"proxy-v1 {w}x{h} {self.rate.rate} gop{self.gop} pcm{PCM_RATE}"

    def preflight(self) -> dict[str, object]:
        return {
            "frameRate": str(self.rate.rate),
            "constantRateSource": self.rate.constant,
            "frames": self.rate.frames,
            "durationSeconds": round(self.rate.duration, 6),
            "sourceDurationSeconds": round(self.rate.source_duration, 6),
            "size": list(self.size),
            "gopFrames": self.gop,
            "audioChannels": self.audio_channels,
        }


def plan_proxy(
    job: ProxyJob,
    info: MediaInfo,
    index: VideoIndex,
    settings: IngestSettings,
    *,
    source: str,
    output: str,
    pcm: str | None,
    timecode: str | None,
    threads: list[str],
) -> ProxyPlan:
    """The one ffmpeg pass: proxy (+ the waveform's PCM as a second output, decoded once)."""
    rate = decide_rate(info, index)
    height = min(job.height or settings.default_proxy_height, settings.max_proxy_height)
    width_px, height_px = proxy_size(info, height)
    gop = gop_frames(job, rate.rate, settings)
    chain = []
    if not rate.constant:
        chain += [f"setpts=PTS-{VFR_LEAD_SECONDS}/TB", f"fps=fps={rate.rate}:round=up"]
    # Autorotation happens before this chain (ffmpeg's default), so sizes are as shown.
    chain += [f"scale={width_px}:{height_px}:flags=bicubic", "setsar=1", "format=yuv420p"]
    channels = info.channels if info.has_audio else None
    args = ["-i", source, "-map", "0:v:0"]
    if channels:
        args += ["-map", "0:a:0"]
    args += [
        "-filter:v:0", ",".join(chain),
        "-fps_mode:v:0", "passthrough" if rate.constant else "cfr",
        *([] if rate.constant else ["-r:v:0", str(rate.rate)]),
        "-c:v:0", "libx264", "-profile:v:0", "high", "-pix_fmt:v:0", "yuv420p",
        "-preset:v:0", "veryfast", "-crf:v:0", "23",
        "-g:v:0", str(gop), "-keyint_min:v:0", str(gop), "-sc_threshold:v:0", "0",
        "-bf:v:0", "0", "-flags:v:0", "+cgop",
        *threads,
    ]  # fmt: skip
    if channels:
        args += ["-c:a:0", "aac", "-ar:a:0", "48000", "-ac:a:0", str(channels),
                 "-b:a:0", f"{64 * min(channels, 8)}k"]  # fmt: skip
    args += ["-map_metadata", "0", "-map_chapters", "-1"]
    if timecode:
        args += ["-timecode", timecode]
    args += ["-movflags", "+faststart", "-f", "mp4", output]
    if pcm is not None and channels:
        # Second output: the same decoded sound, mono at a low rate, for the peaks.
        args += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(PCM_RATE),
                 "-c:a", "pcm_s16le", "-f", "s16le", pcm]  # fmt: skip
    return ProxyPlan(rate, (width_px, height_px), gop, height, channels, args)


def poster_args(proxy: str, at: float, output: str) -> list[str]:
    """One JPEG from the finished proxy (cheap: a short GOP to decode)."""
    return ["-ss", f"{at:.3f}", "-i", proxy, "-frames:v", "1", "-q:v", "3",
            "-update", "1", "-f", "image2", output]  # fmt: skip


def poster_time(duration: float) -> float:
    """A tenth in, at most 5 s: past a black first frame, still near the start."""
    return max(0.0, min(duration * 0.1, 5.0))
