"""The audio side of the filter graph (pure: filter text from job data and probed sources).

Every track is cut once per span in samples from absolute times, resampled to 48 kHz
stereo and padded/trimmed to the exact sample count: the continuous bed (an angle's or an
external file's), or, for follow audio, each span's own sound with 5 ms fades at the cuts.
Then, after the cut, an angle's ambient sound mixed under the external recording, and
loudness normalisation of the finished track. Both keep the track's exact sample count,
so the audio still ends with the video to the sample.

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

import math
from fractions import Fraction
from pathlib import Path

from spooler.export.commands import fmt
from spooler.export.ffconcat import ConcatList
from spooler.export.graph import POSTROLL, Graph, Span
from spooler.export.models import ExportJob, ExternalAudio
from spooler.export.probed import Need, Source

SAMPLE_RATE = 48_000
FADE_SAMPLES = 240  # 5 ms at 48 kHz: fades at follow-audio cuts so they never click


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


def samples_at(t: Fraction) -> int:
    """The 48 kHz sample boundary nearest to `t` (halves round up)."""
    return math.floor(t * SAMPLE_RATE + Fraction(1, 2))


def _audio_chain(start: Fraction, samples: int, gain_db: float, fades: bool) -> str:
    """From graph time `start` on: exactly `samples` samples of 48 kHz stereo."""
    chain = [
        f"atrim=start={fmt(max(Fraction(0), start))}",
        "asetpts=PTS-STARTPTS",
        f"aresample={SAMPLE_RATE}",
        "aformat=sample_fmts=fltp:channel_layouts=stereo",
    ]
    if gain_db:
        chain.append(f"volume={gain_db:g}dB")
    chain += [f"apad=whole_len={samples}", f"atrim=end_sample={samples}"]
    if fades and samples > 2 * FADE_SAMPLES:
        chain += [
            f"afade=t=in:ss=0:ns={FADE_SAMPLES}",
            f"afade=t=out:ss={samples - FADE_SAMPLES}:ns={FADE_SAMPLES}",
        ]
    return ",".join(chain)


def audio_bed(
    job: ExportJob,
    sources: dict[str, Source],
    graph: Graph,
    start: Fraction,
    end: Fraction,
    needs: list[Need],
    list_paths: tuple[Path, ...],
) -> str:
    """The continuous audio track (an angle's or an external file's, perhaps with an angle's
    ambient sound mixed under it), cut once, then loudness-normalised if asked."""
    if isinstance(job.audio, ExternalAudio):
        name, offset, gain, who = (
            job.audio.source,
            Fraction(job.audio.offset),
            job.audio.gain_db,
            "audio",
        )
    else:
        angle = job.audio_angle
        assert angle is not None
        name, offset, gain, who = (
            job.angle(angle).source,
            Fraction(job.angle(angle).sync_offset),
            0.0,
            angle,
        )
    total = samples_at(end) - samples_at(start)
    tracks = [_bed_track(sources, graph, (name, offset, gain), start, end, list_paths[0])]
    needs.append(Need("audio", who, name, offset, start, end, audio=True))
    ambient = job.audio.ambient if isinstance(job.audio, ExternalAudio) else None
    if ambient is not None:
        under = job.angle(ambient.angle)
        offset = Fraction(under.sync_offset)
        needs.append(
            Need("audio.ambient", ambient.angle, under.source, offset, start, end, audio=True)
        )
        track = (under.source, offset, ambient.gain_db)
        tracks.append(_bed_track(sources, graph, track, start, end, list_paths[1]))
    loudness = loudness_chain(job, total)
    if len(tracks) == 1:
        graph.chains.append(f"{tracks[0]}{loudness}[aout]")
    else:
        graph.chains += [f"{tracks[0]}[mic]", f"{tracks[1]}[ambient]"]
        graph.chains.append(f"{mix_chain('[mic]', '[ambient]')}{loudness}[aout]")
    return "[aout]"


def _bed_track(
    sources: dict[str, Source],
    graph: Graph,
    track: tuple[str, Fraction, float],
    start: Fraction,
    end: Fraction,
    list_path: Path,
) -> str:
    """One file's audio over timeline [start, end): its input and chain (no output label)."""
    name, offset, gain = track
    src_start = start + offset
    source = sources[name]
    concat = ConcatList(source.location, Fraction(source.info.start_time), Fraction(0))
    lead = Fraction(source.index.interleave_lead if source.index else 1.0)
    base = concat.add(src_start - 1, src_start + end - start + lead + POSTROLL)
    k = graph.add_list(concat, list_path)
    total = samples_at(end) - samples_at(start)
    return f"[{k}:a:0]{_audio_chain(src_start - base, total, gain, False)}"


def follow_labels(
    job: ExportJob,
    graph: Graph,
    spans: list[Span],
    audio_inputs: list[str],
    bases: list[Fraction],
    *,
    fades: bool = True,
) -> list[str]:
    """Each span's own audio, exactly its samples; 5 ms fades at both ends with `fades`."""
    labels = []
    for i, span in enumerate(spans):
        offset = Fraction(job.angle(span.angle).sync_offset)
        samples = samples_at(span.end) - samples_at(span.start)
        chain = _audio_chain(span.start + offset - bases[i], samples, 0.0, fades)
        graph.chains.append(f"{audio_inputs[i]}{chain}[a{i}]")
        labels.append(f"[a{i}]")
    return labels
