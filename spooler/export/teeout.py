"""One encode of the sound for every output of a job with renditions (pure).

ffmpeg's command line encodes each output's streams separately: a job with a 1080p output,
a 720p rendition and an audio-only m4a encoded the same AAC three times (~10 % of such a
job's CPU, issue 18, bench/renditions_bench.py). When every output is an MP4-family file
asking for the same sound, they are written instead as the slaves of one `tee` output:
its streams are encoded once and each slave takes the streams it `select`s.

All the encoders of that output then sit side by side, so each video encoder's options name
its stream (`-crf:v:1`): an option without a specifier would apply to all of them.
"""

from __future__ import annotations

from pathlib import Path

from spooler.export.encoders import audio_encoder
from spooler.export.models import ExportJob

# Containers a tee slave is written as here (movflags and the select are all they need).
TEE_MUXERS = {"mp4": "mp4", "mov": "mov", "m4a": "ipod"}
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-")


def one_audio_encode(job: ExportJob, has_audio: bool) -> bool:
    """Whether every output can take the same encoded sound: the job has sound and
    renditions, its main output and every rendition are MP4-family files, and every
    rendition asks for the main output's audio codec and bitrate."""
    if not (has_audio and job.renditions) or job.output.container not in TEE_MUXERS:
        return False
    main = audio_encoder(job)
    return all(r.container_value in TEE_MUXERS and audio_encoder(r) == main for r in job.renditions)


def stream_options(args: list[str], kind: str, index: int) -> list[str]:
    """Encoder options (`-option value` pairs) for the `index`-th stream of `kind` (v, a)
    in an output with several: `-crf 18` becomes `-crf:v:1 18`, `-c:v` `-c:v:1`."""
    if len(args) % 2 or not all(a.startswith("-") for a in args[::2]):
        raise ValueError(f"not option/value pairs: {args!r}")
    out: list[str] = []
    for option, value in zip(args[::2], args[1::2], strict=True):
        out += [f"{option.split(':', 1)[0]}:{kind}:{index}", value]
    return out


def tee_slave(container: str, path: Path, select: str, *, faststart: bool) -> str:
    """One slave of a `-f tee` output: `[f=mp4:movflags=+faststart:select=\\'v:0,a\\']file\\:…`.

    The slave list is read with libavutil's av_get_token (a backslash makes the next
    character literal, quotes group), so every character of the path but a few plain ones
    is escaped: a spool path with `|`, `'`, `[` or spaces stays one file name."""
    options = [f"f={TEE_MUXERS[container]}"]
    if faststart:
        options.append("movflags=+faststart")
    options.append(f"select=\\'{select}\\'")
    return "[" + ":".join(options) + "]" + tee_escape(f"file:{path}")


def tee_escape(text: str) -> str:
    return "".join(c if c in _PLAIN else "\\" + c for c in text)
