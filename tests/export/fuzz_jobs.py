"""Fuzzing export jobs: a hypothesis strategy of job files (valid and hostile), and the
invariants every job must keep through validation and planning.

  job bytes -> spooler.kinds.parse_job -> (valid) plan_export with fabricated sources

No exception other than JobError may escape. For every plan: each ffmpeg argument list, each
file the plan writes (ffconcat lists, a filter-graph script) and each packet-copy segment may
only name allowed protocols (file:), only allowed demuxers, inputs inside the media root (or
a validated descriptor, /proc/self/fd/N) and outputs among the job's temporary paths.

Used by tests/export/test_fuzz.py (profiles `ci` and `long`) and by bench/soak.py through
`run_fuzz(seconds)` (this folder on sys.path; no pytest needed).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from spooler.config import Settings
from spooler.errors import JobError
from spooler.export.commands import AudioCopy, EncodedPart, Plan, PlanPaths
from spooler.export.deliverables import output_names
from spooler.export.models import ExportJob
from spooler.export.plan import plan_export
from spooler.export.sources import Source
from spooler.export.textmark import text_path
from spooler.export.thumbnails import ThumbnailPlan, plan_thumbnails
from spooler.export.watermark import IMAGE_DEMUXER
from spooler.kinds import parse_job
from spooler.media import FORMAT_WHITELIST, PROTOCOLS, MediaInfo, VideoIndex, VideoPacket

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)

ROOT = Path("/media/root")
JOB_DIR = Path("/spool/jobs/j1")
PATHS = PlanPaths(
    JOB_DIR / ".tmp-out.mp4",
    JOB_DIR / ".tmp-out.audio.mp4",
    JOB_DIR / ".tmp-out.graph.txt",
    tuple(JOB_DIR / f".tmp-out.{i}.ffconcat" for i in range(64)),
    tuple(JOB_DIR / f".tmp-rendition{i}" for i in range(16)),
)
# The poster, sprite and VTT by published name (all names a job can give them).
IMAGE_TEMPS: dict[str, Path] = {}
# The operator's font, at a path full of filter graph syntax (never opened: plans are pure).
FONT = "/fonts/it's: odd, [dir];\\/F.ttf"
SETTINGS = Settings(media_roots=[ROOT], export={"watermark_font": FONT})
TEXT_FILE = text_path(PATHS)  # where a text watermark's text goes
# A real x264 avcC (High profile, SPS/PPS id 0), so that smart plans are fuzzed too.
AVCC = bytes.fromhex(
    "0164000dffe100196764000dacd94141fb0110000003001000000303c0f142996001000668ebe3cb22c0"
)
# What a plan may write: the job's temporary paths, and the per-command graph scripts and
# piece files a smart render derives from them.
GRAPH_FILES = {PATHS.graph} | {
    PATHS.graph.with_name(f"{PATHS.graph.name}.{suffix}") for suffix in [*range(16), "audio"]
}
PIECE_FILES = {PATHS.output.with_name(f"{PATHS.output.name}.part{g}.mp4") for g in range(16)}
FD_BASE = 100  # fabricated descriptors: sources opened by the kind are read as /proc/self/fd/N

# --- the strategy -------------------------------------------------------------------------

GOOD_SOURCES = ["cam1.mp4", "cam2.mp4", "day 2/cam3.MOV", "lav.wav", 'it\'s "q" [1].mp4']
HOSTILE_SOURCES = [
    "../x.mp4",
    "a/../../x.mp4",
    "/etc/passwd",
    "concat:a.mp4|b.mp4",
    "subfile:,,start,0,end,0,,:x",
    "file:/etc/passwd",
    "file:cam1.mp4",
    "http://127.0.0.1/x",
    "https://example.com/a.mp4",
    "fd:3",
    "pipe:0",
    "data:video/mp4;base64,AAAA",
    "-i",
    "-y.mp4",
    "day/-f.mp4",
    "cam\n1.mp4",
    "cam1.mp4\nfile '/etc/passwd'",
    "x.mp4'\nfile '/etc/passwd",
    "it's.mp4",
    'quote".mp4',
    "C:\\x.mp4",
    "\\\\server\\x.mp4",
    " cam1.mp4",
    "./cam1.mp4",
    "a//b.mp4",
    "img%03d.png",
    "камера-ü-東京.mp4",
    "\u202ecam1.mp4",
    "\x00.mp4",
    "",
]


# Text watermarks: what would break a filter graph, expand, or open something if it got in.
HOSTILE_TEXTS = [
    "© 2026 Studio",
    "it's: 50% [x];, \\ \\: \\'",
    "%{pts} %{localtime} %{eif:1/0:d} %{metadata:x}",
    "'; drawtext=textfile=/etc/passwd:text='",
    "a:fontfile=/etc/passwd:expansion=normal",
    "[vout]null[x];[x]",
    "two\nlines",
    "tab\there",
    "\u202eevil",
    "nul\x00",
    "x" * 200,
    "x" * 201,
    "камера 東京 ü \U0001f600",
    " ",
    "",
]


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], odds: int = 8) -> Any:
    """`good` about odds/(odds+2) of the time: hypothesis favours the lowest integers,
    so the well-formed choice is the low one (and what a failure shrinks towards)."""
    return st.integers(0, odds + 1).flatmap(lambda n: good if n < odds else bad)


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(0, one_in - 1)) == one_in - 1


sources = mostly(
    st.sampled_from(GOOD_SOURCES),
    st.one_of(
        st.sampled_from(HOSTILE_SOURCES),
        st.text(max_size=40),
        st.text(alphabet="abc./-:|%'\"\n\\ ", max_size=20),
    ),
    odds=12,
)
ANGLE_IDS = ["cam1", "cam2", "phone", "c-3_x"]
angle_ids = mostly(st.sampled_from(ANGLE_IDS), st.text(max_size=70), odds=30)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
times = st.one_of(
    st.floats(min_value=0, max_value=400, allow_nan=False),
    st.integers(min_value=0, max_value=400),
)
steps = mostly(
    st.floats(min_value=0.04, max_value=20, allow_nan=False),
    st.one_of(st.floats(min_value=0, max_value=0.04), st.integers(1, 100)),
)
numbers = mostly(
    st.floats(min_value=-100, max_value=100, allow_nan=False),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**20), max_value=10**20),
        junk,
    ),
)


@st.composite
def transitions(draw: st.DrawFn) -> Any:
    spec: dict[str, Any] = {
        "type": draw(
            mostly(
                st.sampled_from(["crossfade", "fadeblack", "fadewhite", "cut"]),
                st.sampled_from(["wipe", "", "CROSSFADE"]),
                odds=30,
            )
        )
    }
    if draw(st.booleans()):
        spec["duration"] = draw(
            mostly(
                st.floats(min_value=0.01, max_value=1, allow_nan=False),
                st.one_of(st.floats(-1, 0), st.floats(60, 1e9), junk),
            )
        )
    return spec


@st.composite
def loudness_specs(draw: st.DrawFn) -> Any:
    spec: dict[str, Any] = {}
    for key, good in (("targetLufs", (-40, -8)), ("truePeak", (-6, 0)), ("loudnessRange", (1, 30))):
        if draw(st.booleans()):
            spec[key] = draw(mostly(st.floats(*good), numbers))
    return spec


@st.composite
def watermarks(draw: st.DrawFn) -> Any:
    spec: dict[str, Any] = {}
    text = draw(st.booleans())
    if not text or rarely(draw, 10):  # both: refused
        spec["image"] = draw(
            mostly(st.sampled_from(["logo.png", "brand/it's a logo.png"]), sources)
        )
    if text:
        spec["text"] = draw(mostly(st.sampled_from(HOSTILE_TEXTS), st.text(max_size=250)))
        if draw(st.booleans()):
            spec["color"] = draw(mostly(st.sampled_from(["white", "black", "#a0B1c2"]), junk))
        if draw(st.booleans()):
            spec["textSize"] = draw(mostly(st.floats(0.001, 0.5), numbers))
    if draw(st.booleans()):
        spec["position"] = draw(
            mostly(
                st.sampled_from(["top-left", "top-right", "bottom-left", "bottom-right", "center"]),
                st.just("middle"),
            )
        )
    for key, good in (("margin", (0, 0.5)), ("scale", (0.01, 1)), ("opacity", (0, 1))):
        if key == "scale" and text and not rarely(draw, 10):
            continue  # scale is for images: refused with a text
        if draw(st.booleans()):
            spec[key] = draw(mostly(st.floats(*good), numbers))
    if rarely(draw, 4):
        spec["start"] = draw(times)
    if rarely(draw, 4):
        spec["end"] = draw(times)
    return spec


@st.composite
def text_watermark_jobs(draw: st.DrawFn) -> Any:
    """A plain valid edit with a text watermark: the general strategy rarely gets one past
    validation, and the text is what an attacker controls."""
    mark: dict[str, Any] = {
        "text": draw(mostly(st.sampled_from(HOSTILE_TEXTS), st.text(min_size=1, max_size=250)))
    }
    if draw(st.booleans()):
        mark["position"] = draw(
            st.sampled_from(["top-left", "top-right", "bottom-left", "bottom-right", "center"])
        )
    for key, low, high in (("textSize", 0.001, 0.5), ("margin", 0, 0.5), ("opacity", 0, 1)):
        if draw(st.booleans()):
            mark[key] = draw(st.floats(low, high))
    if draw(st.booleans()):
        mark["color"] = draw(st.sampled_from(["white", "black", "#a0B1c2", "#000000"]))
    if draw(st.booleans()):
        mark["start"], mark["end"] = sorted(draw(st.lists(st.floats(0, 9), min_size=2, max_size=2)))
    return {
        "angles": [{"id": "cam1", "source": "cam1.mp4"}, {"id": "cam2", "source": "cam2.mp4"}],
        "segments": [
            {"angle": "cam1", "start": 0, "end": 4},
            {"angle": "cam2", "start": 4, "end": 9},
        ],
        "mode": draw(st.sampled_from(["auto", "reencode", "smart"])),
        "watermark": mark,
    }


@st.composite
def audio_specs(draw: st.DrawFn, ids: list[str]) -> Any:
    mode = draw(st.sampled_from(["angle", "external", "follow", "none", "bogus"]))
    spec: dict[str, Any] = {"mode": mode}
    if mode == "angle" and draw(st.booleans()):
        spec["angle"] = draw(st.one_of(st.sampled_from(ids), angle_ids))
    if mode == "external":
        spec["source"] = draw(sources)
        if draw(st.booleans()):
            spec["offset"] = draw(numbers)
        if draw(st.booleans()):
            spec["gainDb"] = draw(numbers)
        if draw(st.booleans()):
            ambient = {"angle": draw(st.one_of(st.sampled_from(ids), angle_ids))}
            if draw(st.booleans()):
                ambient["gainDb"] = draw(numbers)
            spec["ambient"] = ambient
    if mode != "none" and rarely(draw, 3):
        spec["loudness"] = draw(loudness_specs())
    return spec


@st.composite
def rendition_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": draw(
            mostly(st.sampled_from(["720p", "audio", "a", "export"]), st.text(max_size=40))
        )
    }
    if draw(st.booleans()):
        spec["audioOnly"] = draw(mostly(st.booleans(), junk))
    if draw(st.booleans()):
        spec["container"] = draw(st.sampled_from(["mp4", "webm", "m4a", "mkv", "avi"]))
    if draw(st.booleans()):
        spec["videoCodec"] = draw(st.sampled_from(["h264", "vp9", "copy"]))
    if draw(st.booleans()):
        spec["size"] = draw(
            st.sampled_from(
                [
                    {"mode": "height", "height": 360},
                    {"mode": "exact", "width": 320, "height": 320, "fit": "crop"},
                    {"mode": "exact", "width": 64, "height": 48},
                    {"mode": "height", "height": 3},
                ]
            )
        )
    if draw(st.booleans()):
        spec["fileName"] = draw(
            st.one_of(
                st.sampled_from(["export", "../x", "-y", "a/b", "Export.mp4"]), st.text(max_size=30)
            )
        )
    if rarely(draw, 4):
        spec["crf"] = draw(mostly(st.integers(0, 51), junk))
    return spec


@st.composite
def output_specs(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["container"] = draw(
            mostly(st.sampled_from(["mp4", "mov", "mkv", "webm"]), st.sampled_from(["avi", "hls"]))
        )
    if draw(st.booleans()):
        out["videoCodec"] = draw(
            mostly(st.sampled_from(["h264", "copy", "hevc", "vp9", "av1"]), st.just("x"))
        )
    if draw(st.booleans()):
        out["crf"] = draw(mostly(st.integers(0, 51), st.one_of(st.integers(-5, 70), junk)))
    if draw(st.booleans()):
        out["preset"] = draw(
            mostly(
                st.sampled_from(["ultrafast", "medium", "4", "8"]), st.sampled_from(["13", "-y"])
            )
        )
    if draw(st.booleans()):
        out["videoBitrateKbps"] = draw(
            mostly(st.integers(50, 500_000), st.one_of(st.integers(-1, 600_000), junk))
        )
    if draw(st.booleans()):
        out["size"] = draw(
            st.sampled_from(
                [
                    {"mode": "keep"},
                    {"mode": "height", "height": 720},
                    {"mode": "height", "height": 721},
                    {"mode": "exact", "width": 640, "height": 360, "fit": "crop"},
                    {"mode": "exact", "width": 2, "height": 2},
                    {"mode": "exact", "width": 1e9, "height": 2},
                ]
            )
        )
    if draw(st.booleans()):
        out["fps"] = draw(
            mostly(
                st.sampled_from(["keep", 25, 30, "30000/1001", 24.5]),
                st.one_of(st.sampled_from(["1/0", "0", "-30", 240, 0.5, "x/y"]), junk),
            )
        )
    if draw(st.booleans()):
        out["audioCodec"] = draw(st.sampled_from(["aac", "opus", "mp3"]))
    if draw(st.booleans()):
        out["fileName"] = draw(
            st.one_of(
                st.sampled_from(["Final cut", "../../etc/x", "-y", ".hidden", "a/b", "ü.mp4"]),
                st.text(max_size=120),
            )
        )
    return out


def _mutate(draw: st.DrawFn, job: dict[str, Any]) -> Any:
    """Break a well-formed job a little: drop, replace or add a field somewhere."""
    what = draw(st.sampled_from(["drop", "replace", "extra", "root"]))
    containers: list[Any] = [job]
    stack: list[Any] = [job]
    while stack:
        node = stack.pop()
        for value in node.values() if isinstance(node, dict) else node:
            if isinstance(value, dict | list):
                containers.append(value)
                stack.append(value)
    node = draw(st.sampled_from(containers))
    if what == "root":
        return draw(st.one_of(junk, st.just([job])))
    if isinstance(node, dict):
        keys = sorted(node)
        if what == "extra" or not keys:
            node[draw(st.sampled_from(["extra", "Kind", "segments", "x"]))] = draw(junk)
        elif what == "drop":
            node.pop(draw(st.sampled_from(keys)))
        else:
            node[draw(st.sampled_from(keys))] = draw(junk)
    elif node:
        index = draw(st.integers(0, len(node) - 1))
        if what == "drop":
            node.pop(index)
        else:
            node[index] = draw(junk)
    return job


@st.composite
def export_jobs(draw: st.DrawFn) -> Any:
    """An export job as the web app might write it, or a broken or hostile one."""
    count = draw(st.integers(1, 4))
    unique = not rarely(draw, 10)  # duplicate ids now and then
    ids = draw(st.lists(angle_ids, min_size=count, max_size=count, unique=unique))
    angles: list[dict[str, Any]] = []
    for angle_id in ids:
        angle: dict[str, Any] = {"id": angle_id, "source": draw(sources)}
        if draw(st.booleans()):
            angle["syncOffset"] = draw(numbers)
        angles.append(angle)
    job: dict[str, Any] = {"angles": angles}
    if draw(st.booleans()):
        job["kind"] = draw(mostly(st.just("export"), st.sampled_from(["testpattern", "nope"])))
    if rarely(draw, 10):
        job["schemaVersion"] = draw(st.one_of(st.just(1), junk))
    if rarely(draw, 8):  # any times at all: overlaps, gaps, zero-length pieces
        cuts = sorted(draw(st.lists(times, min_size=2, max_size=8)))
    else:
        cuts = [draw(mostly(st.integers(0, 30), times))]
        for step in draw(st.lists(steps, min_size=1, max_size=8)):
            cuts.append(cuts[-1] + step)
    use = mostly(st.sampled_from(ids), angle_ids, odds=20)
    if draw(st.booleans()):
        job["segments"] = [
            {"angle": draw(use), "start": a, "end": b} for a, b in itertools.pairwise(cuts)
        ]
    else:
        job["switches"] = [{"at": t, "angle": draw(use)} for t in cuts[:-1]]
        job["end"] = cuts[-1]
    edits = job.get("segments") or job["switches"]
    if rarely(draw, 3):
        job["transition"] = draw(transitions())
    for edit in edits[0 if rarely(draw, 10) else 1 :]:
        if rarely(draw, 3):
            edit["transition"] = draw(transitions())
    if rarely(draw, 4):
        job["watermark"] = draw(watermarks())
    if rarely(draw, 4):
        lo, hi = sorted(draw(st.lists(times, min_size=2, max_size=2)))
        job["range"] = {"start": lo, "end": hi}
    if draw(st.booleans()):
        job["audio"] = draw(audio_specs(ids))
    if draw(st.booleans()):
        job["output"] = draw(output_specs())
    if draw(st.booleans()):
        job["mode"] = draw(
            mostly(st.sampled_from(["auto", "reencode", "copy", "smart"]), st.just("fast"))
        )
    if rarely(draw, 4):
        job["renditions"] = draw(
            st.lists(rendition_specs(), max_size=3, unique_by=lambda r: str(r["name"]))
        )
    if rarely(draw, 4):
        job["poster"] = {
            "at": draw(mostly(st.one_of(st.none(), times), junk)),
            "format": draw(st.sampled_from(["jpeg", "webp", "png"])),
        }
    if rarely(draw, 4):
        job["storyboard"] = {"interval": draw(mostly(st.floats(0.5, 60), numbers))}
    if rarely(draw, 6):
        job["metadata"] = {"projectId": draw(st.text(max_size=10))}
    for _ in range(draw(st.integers(1, 2)) if rarely(draw, 5) else 0):
        job = _mutate(draw, job)
        if not isinstance(job, dict):
            break
    return job


@st.composite
def job_bytes(draw: st.DrawFn) -> bytes:
    """The job file: JSON of a generated job (NaN allowed), or a damaged file."""
    job = draw(text_watermark_jobs() if rarely(draw, 8) else export_jobs())
    raw = json.dumps(job, allow_nan=True, ensure_ascii=draw(st.booleans())).encode()
    damage = draw(st.integers(0, 19))
    if damage == 19:
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif damage == 18:
        raw = raw.replace(b"{", b'{"angles": [], "angles": ', 1)  # a duplicate key
    elif damage == 17:
        raw = b"\xff\xfe" + raw
    return raw


# --- fabricated sources -------------------------------------------------------------------


@lru_cache(maxsize=8)
def _index(fps: int, seconds: int, gop: int, bframes: bool) -> VideoIndex:
    total = fps * seconds
    order: list[int] = []
    for start in range(0, total, gop):
        end = min(start + gop, total)
        order.append(start)
        m = start + 1
        while m < end:
            anchor = min(m + 3, end - 1) if bframes else m
            order += [anchor, *range(m, anchor)]
            m = anchor + 1
    delay = 2 if bframes else 0
    packets = tuple(
        VideoPacket(
            pts=pts,
            dts=i - delay,
            duration=1,
            keyframe=pts % gop == 0,
            idr=pts % gop == 0,
            pos=48 + 40_000 * i,  # as an MP4's sample tables give them
            size=40_000,
        )
        for i, pts in enumerate(order)
    )
    return VideoIndex(Fraction(1, fps), Fraction(0), packets, 0.05)


def fabricated_sources(spec: ExportJob, variant: int) -> dict[str, Source]:
    """Probe results for every source the job names, as if each were a real camera file."""
    names = sorted({a.source for a in spec.angles} | _external(spec))
    out: dict[str, Source] = {}
    for i, name in enumerate(names):
        fps, bframes = ((30, True), (30, False), (25, True))[(variant + i) % 3 if variant else 0]
        seconds = 200
        info = MediaInfo(
            duration=float(seconds),
            format_name="mov,mp4,m4a,3gp,3g2,mj2",
            video_codec="h264",
            width=1920,
            height=1080,
            fps=Fraction(fps),
            time_base=Fraction(1, fps),
            pix_fmt="yuv420p",
            rotation=90 if variant == 2 and i else 0,
            extradata=AVCC,
            profile="High",
            level=40,
            audio_codec="aac",
            sample_rate=48000,
            channels=2,
        )
        fd = FD_BASE + i if variant % 2 else None  # half of them opened, as the kind does
        out[name] = Source(name, ROOT / name, info, _index(fps, seconds, 2 * fps, bframes), fd)
    if spec.watermark is not None and spec.watermark.image is not None:
        name = spec.watermark.image
        image = MediaInfo(0.0, IMAGE_DEMUXER, "png", 300 + variant, 100, pix_fmt="rgba")
        fd = FD_BASE + len(names) if variant % 2 else None
        out[name] = Source(name, ROOT / name, image, None, fd)
    return out


def _external(spec: ExportJob) -> set[str]:
    source = getattr(spec.audio, "source", None)
    return {source} if isinstance(source, str) else set()


def fabricated_non_reference(source: Source, packets: list[int]) -> frozenset[int]:
    """sources.non_reference_packets as if every B-frame were a non-reference picture (a
    B-frame is shown before a packet decoded ahead of it), for the sources opened by fd."""
    index = source.index
    if source.fd is None or index is None:
        return frozenset()
    return frozenset(i for i in packets if i and index.packets[i].pts < index.packets[i - 1].pts)


# --- the invariants -----------------------------------------------------------------------

_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Filters that open files or sockets of their own: never in a plan's graph.
_FILE_FILTERS = re.compile(
    r"(?<![a-z_])(a?movie|sendcmd|asendcmd|zmq|azmq|subtitles|ass|lut3d|haldclut"
    r"|frei0r|ladspa|lv2|sofalizer|afir|coreimage|ocr|vidstab\w*|signature)="
)
# drawtext is allowed with checked options only (check_drawtext); any other use is caught.
_DRAWTEXT = re.compile(r"(?<![A-Za-z0-9_])drawtext(?![A-Za-z0-9_])")
_DRAWTEXT_OPTIONS = {
    "fontfile", "textfile", "expansion", "fontsize", "fontcolor", "x", "y", "enable",
}  # fmt: skip
_NUMBER = re.compile(r"^-?\d+\.\d{6}$")


def _unquote(token: str) -> str | None:
    """ffconcat's quoting, as ConcatList writes it: '...' with ' as '\\''."""
    if not (token.startswith("'") and token.endswith("'")):
        return None
    return token[1:-1].replace("'\\''", "'")


@dataclass
class Checker:
    """Collects the invariant violations of one plan."""

    sources: dict[str, Source]
    problems: list[str] = field(default_factory=list)

    def input_ok(self, path: Path) -> bool:
        fds = {s.fd for s in self.sources.values() if s.fd is not None}
        text = str(path)
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            return False
        if text.startswith("/proc/self/fd/"):
            number = text.removeprefix("/proc/self/fd/")
            return number.isdigit() and int(number) in fds
        return path.is_absolute() and ".." not in path.parts and path.is_relative_to(ROOT)

    def fail(self, text: str) -> None:
        self.problems.append(text)

    def check(self, plan: Plan) -> list[str]:
        temps = {PATHS.output, PATHS.audio, *GRAPH_FILES, *PATHS.lists, TEXT_FILE}
        for out in plan.extra_outputs:
            if out.temp not in PATHS.renditions:
                self.fail(f"rendition written to {out.temp}, not a temporary path")
            if _SAFE_NAME.match(out.name) is None:
                self.fail(f"rendition published as {out.name!r}")
        for command in plan.commands:
            for path, text in command.files.items():
                if path not in temps:
                    self.fail(f"writes {path}, not one of the job's temporary paths")
                if path in PATHS.lists:
                    self.check_list(text)
                elif path in GRAPH_FILES:
                    self.check_graph(text)
            self.check_args(command.args, set(command.files))
        for segment in plan.copy_segments:
            if isinstance(segment, EncodedPart):
                if segment.path not in PIECE_FILES:
                    self.fail(f"encoded part read from {segment.path}")
            elif not self.input_ok(segment.path):
                self.fail(f"copy segment reads {segment.path}")
        if plan.template is not None and not self.input_ok(plan.template):
            self.fail(f"track template read from {plan.template}")
        audio = plan.copy_audio
        if isinstance(audio, AudioCopy):
            if not self.input_ok(audio.path):
                self.fail(f"audio copy reads {audio.path}")
        elif audio is not None and audio != PATHS.audio:
            self.fail(f"audio taken from {audio}")
        return self.problems

    def check_graph(self, text: str) -> None:
        if _FILE_FILTERS.search(text):
            self.fail(f"filter graph uses a filter that opens files: {text[:200]!r}")
        for match in _DRAWTEXT.finditer(text):
            self.check_drawtext(text, match.end())

    def check_drawtext(self, text: str, at: int) -> None:
        """drawtext opens two files: only the operator's font and the job's text file, and
        never expands the text. Its options are read back as ffmpeg's parsers would."""
        while text[at : at + 1].isspace():  # the graph parser skips it too
            at += 1
        if text[at : at + 1] == "@":
            self.fail("drawtext with an instance name")
        at += text[at : at + 1] == "="
        options, _ = _token(text, at, "[],;")  # the graph level
        seen: dict[str, str] = {}
        i = 0
        while i < len(options):
            key, i = _token(options, i, "=:")
            value, i = _token(options, i + 1, ":") if options[i : i + 1] == "=" else ("", i)
            i += 1
            if key in seen or key not in _DRAWTEXT_OPTIONS:
                self.fail(f"drawtext option {key!r} repeated or not allowed: {options!r}")
            seen[key] = value
        wanted = {"fontfile": FONT, "textfile": str(TEXT_FILE), "expansion": "none"}
        for key, value in wanted.items():
            if seen.get(key) != value:
                self.fail(f"drawtext {key}={seen.get(key)!r}, not {value!r}")

    def check_list(self, text: str) -> None:
        lines = text.split("\n")
        if lines[0] != "ffconcat version 1.0" or lines[-1] != "":
            self.fail("ffconcat list without its header or final newline")
        expected_options = [
            f"option format_whitelist {FORMAT_WHITELIST}",
            f"option protocol_whitelist {PROTOCOLS}",
        ]
        # Allowed after them: the entry's probe refused a decoder (ffconcat.ConcatList.probe).
        no_probe = "option codec_whitelist none"
        body = lines[1:-1]
        i = 0
        while i < len(body):
            keyword, _, rest = body[i].partition(" ")
            if keyword == "file":
                name = _unquote(rest)
                if name is None or not name.startswith("file:"):
                    self.fail(f"ffconcat file entry {rest!r} is not a quoted file: URL")
                elif not self.input_ok(Path(name.removeprefix("file:"))):
                    self.fail(f"ffconcat list names {name!r}")
                if body[i + 1 : i + 3] != expected_options:
                    self.fail(f"ffconcat entry {rest!r} lacks the per-file allow-lists")
                i += 3 + (body[i + 3 : i + 4] == [no_probe])
                continue
            if keyword not in ("inpoint", "outpoint", "duration") or not _NUMBER.match(rest):
                self.fail(f"unexpected ffconcat line {body[i]!r}")
            i += 1

    def check_drops(self, value: str) -> None:
        """An input's packet drops (smart.py): `noise=drop=` and a sum of `eq(pos\\,N)`
        terms in parentheses, nothing else (the bitstream filter list's own separator, the
        comma, escaped)."""
        expression = value.removeprefix("noise=drop=")
        reduced = _DROP_TERM.sub("T", expression)
        while (shorter := reduced.replace("(T+T)", "T")) != reduced:
            reduced = shorter
        if not value.startswith("noise=drop=") or reduced != "T":
            self.fail(f"-bsf:v {value[:200]!r} is not a sum of packet positions")

    def check_tee(self, spec: str, outputs: set[str]) -> None:
        """A tee output's slaves as ffmpeg reads them (av_get_token, then `[options]`
        and a file name): every one a temporary path, written with the options we use."""
        i = 0
        while i <= len(spec):
            slave, i = _token(spec, i, "|")
            i += 1
            options, _, target = slave.partition("]")
            if not options.startswith("[") or not _TEE_OPTIONS.match(options[1:]):
                self.fail(f"tee slave {slave!r} has unexpected options")
            if target not in outputs:
                self.fail(f"tee slave writes {target!r}, not a temporary path")

    def check_args(
        self, args: list[str], files: set[Path], inputs: frozenset[Path] = frozenset()
    ) -> None:
        """`inputs`: our own files a command may read besides the sources (the main output)."""
        outputs = {
            f"file:{p}" for p in (PATHS.output, PATHS.audio, *PATHS.renditions, *PIECE_FILES)
        }
        outputs |= {f"file:{p}" for p in IMAGE_TEMPS.values()}
        if args[-1] not in outputs and args[-3:-1] != ["-f", "tee"]:
            self.fail(f"output {args[-1]!r} is not a temporary path")
        allowed_at: set[int] = {len(args) - 1}
        for i, arg in enumerate(args):
            if i >= 2 and args[i - 2] == "-f" and args[i - 1] in _OUTPUT_MUXERS:
                allowed_at.add(i)  # an output: `-f <muxer> file:<temporary path>`
                if arg not in outputs:
                    self.fail(f"output {arg!r} is not a temporary path")
            if i >= 2 and args[i - 2] == "-f" and args[i - 1] == "tee":
                allowed_at.add(i)  # one output for several files: each a temporary path
                self.check_tee(arg, outputs)
            if arg == "-i":
                allowed_at.add(i + 1)
                target = args[i + 1]
                path = Path(target.removeprefix("file:"))
                before = args[max(0, i - 8) : i]
                if path in inputs:
                    if not target.startswith("file:") or _value(before, "-format_whitelist") != (
                        FORMAT_WHITELIST
                    ):
                        self.fail(f"own input {target!r} without file: or the allow-list")
                    continue
                whitelist = _value(before, "-format_whitelist")
                if not target.startswith("file:"):
                    self.fail(f"input {target!r} is not a file: URL")
                elif path in files and path in PATHS.lists:
                    if before[:4] != ["-f", "concat", "-safe", "0"] or whitelist != "concat":
                        self.fail(f"list input {target!r} without -f concat/-format_whitelist")
                elif before[-6:-4] == ["-f", IMAGE_DEMUXER]:
                    # The watermark: one demuxer, forced, and nothing else allowed
                    if not self.input_ok(path) or whitelist != IMAGE_DEMUXER:
                        self.fail(f"image input {target!r} outside the roots or not png only")
                elif not self.input_ok(path) or whitelist != FORMAT_WHITELIST:
                    self.fail(f"input {target!r} outside the roots or without the allow-list")
                if _value(before, "-protocol_whitelist") != PROTOCOLS:
                    self.fail(f"input {target!r} without -protocol_whitelist {PROTOCOLS}")
            elif arg == "-bsf:v":
                allowed_at.add(i + 1)
                self.check_drops(args[i + 1])
                marks = [a for a in args[i + 2 :] if a in ("-i", "-map", *_GRAPH_OPTIONS)]
                if marks[:1] != ["-i"]:
                    self.fail("-bsf:v is not an input's option")
            elif arg == "-/filter_complex":
                allowed_at.add(i + 1)
                if Path(args[i + 1]) not in GRAPH_FILES or Path(args[i + 1]) not in files:
                    self.fail(f"graph script {args[i + 1]!r} is not the job's graph file")
            elif arg == "-filter_complex":
                allowed_at.add(i + 1)
                self.check_graph(args[i + 1])
        for i, arg in enumerate(args):
            if i in allowed_at:
                continue
            if _PROTOCOL.match(arg) or arg.startswith("/") or "\n" in arg or "\x00" in arg:
                self.fail(f"argument {i} {arg!r} looks like a URL or path")


_GRAPH_OPTIONS = ("-filter_complex", "-/filter_complex")
_DROP_TERM = re.compile(r"eq\(pos\\,\d+\)")
_OUTPUT_MUXERS = {"mp4", "mov", "matroska", "webm", "ipod", "mjpeg", "webp"}
_TEE_OPTIONS = re.compile(r"^f=(mp4|mov|ipod)(:movflags=\+faststart)?:select='[va0-9:,]+'$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _token(text: str, i: int, terms: str) -> tuple[str, int]:
    """libavutil's av_get_token: up to an unquoted, unescaped terminator; \\x is x, '...' is
    literal. Returns the token and the terminator's index."""
    out: list[str] = []
    while i < len(text) and text[i] not in terms:
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif text[i] == "'":
            end = text.find("'", i + 1)
            end = len(text) if end < 0 else end
            out.append(text[i + 1 : end])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i


def _value(args: list[str], option: str) -> str | None:
    return args[args.index(option) + 1] if option in args[:-1] else None


# --- one example, and the time-boxed runner --------------------------------------------


@dataclass
class Outcome:
    valid: bool = False
    planned: bool = False
    path: str | None = None  # reencode, copy or smart
    violations: list[str] = field(default_factory=list)


def check_job(raw: bytes, variant: int = 0) -> Outcome:
    """Parse and plan one job file; what happened, and every broken invariant."""
    outcome = Outcome()
    try:
        spec, _ = parse_job(raw)
    except JobError:
        return outcome
    except Exception as exc:  # the invariant under test
        outcome.violations.append(f"parse_job raised {type(exc).__name__}: {exc}")
        return outcome
    outcome.valid = True
    if not isinstance(spec, ExportJob):
        return outcome
    try:
        sources = fabricated_sources(spec, variant)
        plan = plan_export(spec, sources, SETTINGS, PATHS, fabricated_non_reference)
    except JobError:
        return outcome
    except Exception as exc:  # the invariant under test
        outcome.violations.append(f"plan_export raised {type(exc).__name__}: {exc!r}"[:500])
        return outcome
    outcome.planned = True
    outcome.path = plan.mode
    checker = Checker(fabricated_sources(spec, variant))
    outcome.violations += checker.check(plan)
    try:
        thumbs = stills_plan(spec, plan)
    except JobError:
        thumbs = None
    except Exception as exc:  # the invariant under test
        outcome.violations.append(f"plan_thumbnails raised {type(exc).__name__}: {exc!r}"[:500])
        thumbs = None
    if thumbs is not None:
        checker.check_args(thumbs.command.args, set(), frozenset({PATHS.output}))
        checker.check_graph(thumbs.command.args[thumbs.command.args.index("-filter_complex") + 1])
        outcome.violations += checker.problems[len(outcome.violations) :]
    if not math.isfinite(float(plan.duration)) or plan.duration <= 0:
        outcome.violations.append(f"plan duration {plan.duration}")
    return outcome


def stills_plan(spec: ExportJob, plan: Plan) -> ThumbnailPlan | None:
    """The poster/storyboard command as the kind would plan it after the main output."""
    names = [name for path, name in output_names(spec) if path[0] in ("poster", "storyboard")]
    for name in names:
        IMAGE_TEMPS.setdefault(name, JOB_DIR / f".tmp-{len(IMAGE_TEMPS)}")
    return plan_thumbnails(
        spec, PATHS.output, plan.width, plan.height, float(plan.duration), None, IMAGE_TEMPS
    )


def run_fuzz(seconds: float, batch: int = 200) -> dict[str, Any]:
    """Generate and check jobs for `seconds`; counts, and the first few violations."""
    counts: dict[str, Any] = {
        "examples": 0,
        "valid": 0,
        "rejected": 0,
        "planned": 0,
        "violations": 0,
        "paths": {},
        "examples_of_violations": [],
    }
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=batch,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(job_bytes(), st.integers(0, 3))
    def one(raw: bytes, variant: int) -> None:
        if time.monotonic() >= deadline:
            return
        outcome = check_job(raw, variant)
        counts["examples"] += 1
        counts["valid" if outcome.valid else "rejected"] += 1
        counts["planned"] += outcome.planned
        if outcome.path:
            counts["paths"][outcome.path] = counts["paths"].get(outcome.path, 0) + 1
        if outcome.violations:
            counts["violations"] += 1
            if len(counts["examples_of_violations"]) < 5:
                counts["examples_of_violations"].append(
                    {"job": raw[:2000].decode("utf-8", "replace"), "problems": outcome.violations}
                )

    while time.monotonic() < deadline:
        one()
    counts["seconds"] = round(seconds, 1)
    return counts


if __name__ == "__main__":
    import sys

    print(json.dumps(run_fuzz(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0), indent=1))
