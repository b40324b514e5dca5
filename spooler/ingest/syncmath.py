"""Where one recording sits in another, from their sound (pure numpy).

1. Coarse: an onset signal at ENV_RATE (200 Hz: the positive change of log energy per
   5 ms, so a quiet and a loud microphone of one scene look alike), cross-correlated over
   every lag that leaves `min_overlap` seconds of overlap (one FFT).
2. Fine: at the analysis rate, short windows spread over the overlap, each placed by
   GCC-PHAT (the cross-spectrum whitened, so filtering and room colour do not move the
   peak) within ±SEARCH seconds of the coarse lag, with sub-sample interpolation.
3. A line through the windows' offsets (outliers dropped) gives the drift (ppm), the
   offset at the overlap's start and end, and the reported offset at its middle.

Sign: the offset d of track b against reference a means b(t + d) sounds like a(t): with
a as the timeline's clock, d is b's syncOffset (docs/export.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]

ENV_RATE = 200
WINDOW_SECONDS = 3.0
MAX_WINDOWS = 16
SEARCH_SECONDS = 0.2
SILENT_RMS = 10 ** (-70 / 20)  # below -70 dBFS there is nothing to hear
MIN_PROMINENCE = 8.0  # coarse peak height in robust standard deviations of the correlation
INLIER_SECONDS = 0.002
MIN_WINDOWS = 3


@dataclass(frozen=True)
class Placement:
    reason: str  # placed, silent, no_overlap, ambiguous
    offset: float | None = None  # at the overlap's middle
    confidence: float = 0.0
    ppm: float = 0.0
    offset_at_start: float = 0.0
    offset_at_end: float = 0.0
    overlap: tuple[float, float] = (0.0, 0.0)
    windows_used: int = 0
    windows_tried: int = 0


def rms(x: Samples) -> float:
    # np.dot: no temporary array the size of the track (a 4-hour track is 0.9 GB).
    return float(np.sqrt(np.dot(x, x) / len(x))) if len(x) else 0.0


def onset(x: Samples, rate: int) -> Floats:
    hop = rate // ENV_RATE
    n = len(x) // hop
    frames = x[: n * hop].reshape(n, hop)  # a view: no copy of the track
    energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / hop
    env = np.log(np.sqrt(energy) + 1e-4)
    flux = np.maximum(0.0, np.diff(env, prepend=env[:1]))
    std = flux.std()
    out: Floats = (flux - flux.mean()) / std if std > 0 else flux * 0.0
    return out


def _xcorr(a: Floats, b: Floats) -> Floats:
    """c[k] = sum_t a[t] b[t + k], k from -(len(a)-1) to len(b)-1, in that order."""
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    c = np.fft.irfft(np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size), size)
    out: Floats = np.concatenate([c[size - (len(a) - 1) :], c[: len(b)]])
    return out


def coarse(
    ref: Floats, other: Floats, min_overlap: float, max_offset: float | None
) -> tuple[float, float, float] | None:
    """(lag seconds, prominence, second-best ratio) or None if no lag leaves the overlap."""
    corr = _xcorr(ref, other)
    lags = np.arange(-(len(ref) - 1), len(other)) / ENV_RATE
    overlap = np.minimum(len(ref) / ENV_RATE, len(other) / ENV_RATE - lags) - np.maximum(0, -lags)
    ok = overlap >= min_overlap
    if max_offset is not None:
        ok &= np.abs(lags) <= max_offset
    if not ok.any():
        return None
    corr = np.where(ok, corr, -np.inf)
    best = int(np.argmax(corr))
    valid = corr[ok]
    median = float(np.median(valid))
    spread = float(np.median(np.abs(valid - median))) * 1.4826 or 1e-12
    prominence = (float(corr[best]) - median) / spread
    near = np.abs(lags - lags[best]) <= 0.25
    rest = np.where(near | ~ok, -np.inf, corr)
    second = float(rest.max()) if np.isfinite(rest.max()) else median
    ratio = max(0.0, (second - median) / max(float(corr[best]) - median, 1e-12))
    return float(lags[best]), prominence, min(1.0, ratio)


def _phat_lag(a: Floats, b: Floats) -> tuple[float, float]:
    """Where a sits in b (b longer): (lag in samples, peak sharpness)."""
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    cross = np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size)
    cross /= np.abs(cross) + 1e-12
    c = np.fft.irfft(cross, size)[: len(b) - len(a) + 1]
    k = int(np.argmax(c))
    frac = 0.0
    if 0 < k < len(c) - 1:
        y0, y1, y2 = c[k - 1], c[k], c[k + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom else 0.0
    sharp = float(c[k] / (np.std(c) + 1e-12))
    return k + frac, sharp


def fine(
    ref: Samples, other: Samples, rate: int, lag: float, span: tuple[float, float]
) -> list[tuple[float, float]]:
    """(reference time, offset) of each window that could be placed."""
    start, end = span
    usable = end - start - WINDOW_SECONDS
    count = int(min(MAX_WINDOWS, max(0, usable // WINDOW_SECONDS) + 1)) if usable >= 0 else 0
    points: list[tuple[float, float]] = []
    w, m = int(WINDOW_SECONDS * rate), int(SEARCH_SECONDS * rate)
    for i in range(count):
        t = start + (usable * (i + 0.5) / count if count > 1 else usable / 2)
        a0 = round(t * rate)
        b0 = round((t + lag) * rate) - m
        if b0 < 0 or b0 + w + 2 * m > len(other) or a0 + w > len(ref):
            continue
        a = ref[a0 : a0 + w].astype(np.float64)
        b = other[b0 : b0 + w + 2 * m].astype(np.float64)
        if rms(a.astype(np.float32)) < SILENT_RMS or rms(b.astype(np.float32)) < SILENT_RMS:
            continue
        k, sharp = _phat_lag(a, b)
        if sharp < 6.0:
            continue
        points.append((t + WINDOW_SECONDS / 2, (b0 + k - a0) / rate))
    return points


def fit(points: list[tuple[float, float]]) -> tuple[float, float, int] | None:
    """Line offset = a + b·t through the points, dropping the worst until all are within
    INLIER_SECONDS: (a, b, inliers) or None if fewer than MIN_WINDOWS agree."""
    pts = list(points)
    while len(pts) >= MIN_WINDOWS:
        t = np.array([p[0] for p in pts])
        d = np.array([p[1] for p in pts])
        slope, intercept = np.polyfit(t, d, 1) if np.ptp(t) > 0 else (0.0, float(d.mean()))
        resid = np.abs(d - (intercept + slope * t))
        worst = int(np.argmax(resid))
        if resid[worst] <= INLIER_SECONDS:
            return float(intercept), float(slope), len(pts)
        pts.pop(worst)
    return None


def place(
    ref: Samples,
    other: Samples,
    rate: int,
    *,
    min_overlap: float,
    max_offset: float | None = None,
    ref_onset: Floats | None = None,
) -> Placement:
    """Where `other` sits against `ref` (both mono at `rate`); `ref_onset` saves computing
    the reference's onset signal again for every angle."""
    if rms(other) < SILENT_RMS:
        return Placement("silent")
    ref_on = onset(ref, rate) if ref_onset is None else ref_onset
    found = coarse(ref_on, onset(other, rate), min_overlap, max_offset)
    if found is None:
        return Placement("no_overlap")
    lag, prominence, second = found
    if prominence < MIN_PROMINENCE:
        return Placement("ambiguous")
    ref_len, other_len = len(ref) / rate, len(other) / rate
    span = (max(0.0, -lag), min(ref_len, other_len - lag))
    points = fine(ref, other, rate, lag, span)
    line = fit(points)
    if line is None:
        return Placement("ambiguous", windows_tried=len(points))
    intercept, slope, used = line
    middle = (span[0] + span[1]) / 2
    tried = max(len(points), 1)
    return Placement(
        "placed",
        offset=intercept + slope * middle,
        confidence=round((used / tried) * (1.0 - second), 3),
        ppm=slope * 1e6,
        offset_at_start=intercept + slope * span[0],
        offset_at_end=intercept + slope * span[1],
        overlap=span,
        windows_used=used,
        windows_tried=len(points),
    )
