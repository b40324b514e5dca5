"""Audio after the cut: an angle's ambient sound mixed under the external recording, and
loudness normalisation of the finished track (pure: filter text from job data).

Both keep the track's exact sample count (48 kHz stereo, as every audio chain here), so the
audio still ends with the video to the sample.

- Mix: `audio.ambient` = {angle, gainDb}: the angle's own audio, cut over the same span
  through its sync offset, at gainDb, added to the external recording (itself at its own
  gainDb). `amix` with normalize=0 is a plain sum: neither input is attenuated by the
  number of inputs, so the gains are what the job says.
- Loudness: `audio.loudness` = {targetLufs, truePeak, loudnessRange}: ffmpeg's loudnorm in
  ONE pass (dynamic mode: a 3 s look-ahead gain, then a true-peak limiter), inside the same
  ffmpeg run as everything else. loudnorm works at 192 kHz internally and outputs that
  rate: the chain resamples back to 48 kHz and pads/trims to the exact count. One pass
  lands within about 1 LU of the target on speech or music longer than a few seconds.
"""

from __future__ import annotations

from spooler.export.models import ExportJob

SAMPLE_RATE = 48_000


def exact(samples: int) -> str:
    """48 kHz stereo float, exactly `samples` long, timestamps from sample 0."""
    return (
        f"aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
        f"apad=whole_len={samples},atrim=end_sample={samples},asetpts=N/SR/TB"
    )


def loudness_chain(job: ExportJob, samples: int) -> str:
    """Filters (with a leading comma) to append to the finished track, or ''."""
    spec = job.loudness
    if spec is None:
        return ""
    return (
        f",loudnorm=I={spec.target_lufs:g}:TP={spec.true_peak:g}:LRA={spec.loudness_range:g}"
        f",{exact(samples)}"
    )


def mix_chain(mic: str, ambient: str) -> str:
    """The two labelled tracks (each already exact) summed: neither is attenuated."""
    return f"{mic}{ambient}amix=inputs=2:duration=first:normalize=0"
