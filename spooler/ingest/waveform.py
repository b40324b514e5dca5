"""Waveform peaks in BBC audiowaveform's JSON format, version 2 (pure).

    {"version": 2, "channels": 1, "sample_rate": 16000, "samples_per_pixel": 160,
     "bits": 8, "length": N, "data": [min0, max0, min1, max1, ...]}

wavesurfer.js and peaks.js (waveform-data.js) read it as is. Values are the 16-bit
samples' minimum and maximum per `samples_per_pixel` samples, scaled to 8 bits (-128..127)
when `bits` is 8, as audiowaveform does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def peaks(
    samples: npt.NDArray[np.int16], *, sample_rate: int, pixels_per_second: int, bits: int
) -> dict[str, Any]:
    per_pixel = max(1, sample_rate // pixels_per_second)
    length = -(-len(samples) // per_pixel)  # the last, partial pixel counts too
    data: list[int] = []
    if length:
        padded = np.zeros(length * per_pixel, dtype=np.int32)
        padded[: len(samples)] = samples
        if len(samples) % per_pixel:  # padding must not invent a zero peak
            padded[len(samples) :] = samples[-1]
        blocks = padded.reshape(length, per_pixel)
        low, high = blocks.min(axis=1), blocks.max(axis=1)
        if bits == 8:
            low, high = low // 256, high // 256  # floor: -32768 -> -128, 32767 -> 127
        pairs = np.empty(2 * length, dtype=np.int32)
        pairs[0::2], pairs[1::2] = low, high
        data = pairs.tolist()
    return {
        "version": 2,
        "channels": 1,
        "sample_rate": sample_rate,
        "samples_per_pixel": per_pixel,
        "bits": bits,
        "length": length,
        "data": data,
    }
