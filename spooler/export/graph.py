"""The filter-graph toolkit every mode shares: one ffmpeg command's inputs and chains.

reencode.py builds the whole picture with it; streamcopy.py and smart.py use it for the
audio track and for the frames they encode around the cuts (audiograph.py adds the audio
chains). Pure: graph text and list files from probed sources, nothing is run or written.

Each angle is ONE input, an ffconcat list of just its stretches (ffconcat.py): one decoder
per angle whatever the number of cuts, and only what is shown gets decoded (plus a GOP
before and a little after each stretch), each stretch's frames routed to its own branch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from spooler.export.commands import PlanPaths, fmt
from spooler.export.ffconcat import ConcatList, concat_input
from spooler.export.models import ExportJob
from spooler.export.probed import Source
from spooler.mediainfo import is_mov

POSTROLL = Fraction(1, 5)  # seconds read past a stretch beyond the file's interleave lead
# An outpoint this far past a packet's decode time keeps the packet (ffconcat rounds it
# outwards to the microsecond; a frame lasts thousands).
KEEP_PACKET = Fraction(1, 1_000_000)
GRAPH_INLINE_LIMIT = 60_000  # longer graphs go to a file (one argv string must stay < 128 KiB)


@dataclass(frozen=True)
class PieceInputs:
    """What piece_inputs made: per span (in order) its pads, base and read; per angle its
    input (an index into Graph.inputs)."""

    video: list[str]
    audio: list[str]
    bases: list[Fraction]
    # Each span's entry, in source time: decoding starts at the keyframe at or before its
    # inpoint; no packet with a decode time at or past its outpoint is read.
    reads: list[tuple[Fraction, Fraction]]
    input_of: dict[str, int]


@dataclass(frozen=True)
class Span:
    """A stretch of output on one angle: timeline [start, end)."""

    angle: str
    start: Fraction
    end: Fraction
    label: str


class Graph:
    """Collects the inputs, filter chains and list files of one ffmpeg command."""

    def __init__(self) -> None:
        self.inputs: list[list[str]] = []
        self.chains: list[str] = []
        self.files: dict[Path, str] = {}

    def add_input(self, args: list[str]) -> int:
        self.inputs.append(args)
        return len(self.inputs) - 1

    def add_list(self, concat: ConcatList, list_path: Path) -> int:
        """The list becomes an input (written to `list_path` before ffmpeg runs)."""
        self.files[list_path] = concat.text()
        return self.add_input(concat_input(list_path))


def piece_inputs(
    job: ExportJob,
    sources: dict[str, Source],
    graph: Graph,
    spans: list[Span],
    list_paths: list[Path],
    margin: Callable[[Source], Fraction],
    *,
    video: bool,
    audio: bool,
    postroll: bool = True,
) -> PieceInputs:
    """One ffconcat input per angle holding its spans; one branch per span (`route`).

    Returns each span's video and audio pad labels, its base (graph time = source time -
    base) and the stretch its entry reads, and each angle's input. Each stretch starts
    `margin` early and ends `margin` past the span plus the file's measured interleave
    lead: an entry ends at the first packet of ANY stream past its outpoint, and audio
    chunks may sit ahead of the video in the file; then POSTROLL more. `postroll=False`
    (smart's encoded parts: video only, each span trimmed to its exact frames) adds the
    file's decode lag instead (0 unless it stores negative composition offsets): every
    packet the span's frames need has a decode time below the span's end + that lag, so
    the packet that ends the entry comes after all of them (issue 18: 6 frames fewer
    decoded past each part at 30 fps); an MP4/MOV's entry ends right after the last of
    those packets (VideoIndex.last_needed_decode) plus the lead. And no `margin` past the
    span: a trim closes on the first frame past its end, and here that frame is the next
    entry's first, a warm-up frame its own span never shows, routed back to the span
    before (`joins`); only a span whose next entry reads from the file's start (no warm-up
    frame before its first) keeps the margin. No entry of an MP4/MOV decodes a frame to be
    probed, the input's own probe one (ConcatList.probe). A non-MP4 entry starts at the
    decode time of the keyframe before it (VideoIndex.seek_time).
    """
    assert postroll or not audio, "an audio read keeps the postroll"
    lists: dict[str, ConcatList] = {}
    lags: dict[str, Fraction] = {}
    bases: list[Fraction] = []
    reads: list[tuple[Fraction, Fraction]] = []
    # postroll=False: per angle, each join's graph time, half the margin (smart's: one frame)
    # before the next span's first frame; the frames before it (the next entry's warm-up,
    # from a keyframe a whole margin or more before) go to the span before, and close its trim.
    joins: dict[str, list[Fraction]] = {}
    read_ins = [_read_in(job, sources, span, margin) for span in spans]
    warmed = _warmed_up(spans, read_ins) if not postroll else []
    for n, span in enumerate(spans):
        angle = job.angle(span.angle)
        source = sources[angle.source]
        if span.angle not in lists:
            # A seek lands at most one GOP early; one keyframe only: the whole file.
            gop = source.index.keyframe_max_gap() if source.index else None
            longest = Fraction(gop if gop is not None else source.video_end)
            lists[span.angle] = ConcatList(
                source.location,
                Fraction(source.info.start_time),
                longest + 1,
                # An entry a read: each probe would decode a keyframe. Only an MP4/MOV's
                # entries go without it (mediainfo.NO_PROBE_DECODE).
                probe=not is_mov(source.info.format_name),
            )
        src_start = span.start + Fraction(angle.sync_offset)
        m = m_end = margin(source)
        src_end = src_start + span.end - span.start
        lead = Fraction(source.index.interleave_lead if source.index else 1.0)
        if postroll:
            tail = lead + POSTROLL
        else:
            if span.angle not in lags:
                lags[span.angle] = source.index.decode_lag() if source.index else POSTROLL
            tail = lead + lags[span.angle]
            if warmed[n]:
                m_end = Fraction(0)
        read_out = src_end + m_end + tail
        if not postroll and warmed[n] and source.index and is_mov(source.info.format_name):
            # An MP4/MOV stores its decode times, which the concat demuxer's outpoint is
            # compared with (another container's may be guessed after a seek): the entry
            # ends at the first packet decoded after its frames' last one (a microsecond
            # past that one's decode time keeps it). At a head part's end, the IDR where
            # the copy resumes and the frame decoded after it are no longer decoded.
            needed = source.index.last_needed_decode(src_end)
            if needed is not None:  # decoded before src_end + lag: never past read_out
                read_out = needed + KEEP_PACKET + lead
        concat = lists[span.angle]
        base = concat.add(read_ins[n], read_out)
        if not postroll and len(concat.reads) > 1:
            joins.setdefault(span.angle, []).append(src_start - m / 2 - base)
        bases.append(base)
        reads.append(concat.reads[-1])
    pads: dict[str, tuple[list[str], list[str]]] = {}
    input_of: dict[str, int] = {}
    for angle_id, concat in lists.items():
        k = input_of[angle_id] = graph.add_list(concat, list_paths[len(pads)])
        count = sum(span.angle == angle_id for span in spans)
        vpads = [f"[i{k}v{j}]" for j in range(count)] if video else []
        apads = [f"[i{k}a{j}]" for j in range(count)] if audio else []
        at = joins.get(angle_id)  # postroll reads: the default, mid-gap
        if video:
            graph.chains.append(f"[{k}:v:0]{route('select', concat, count, at)}{''.join(vpads)}")
        if audio:
            graph.chains.append(f"[{k}:a:0]{route('aselect', concat, count)}{''.join(apads)}")
        pads[angle_id] = (vpads, apads)
    vlabels = [pads[span.angle][0].pop(0) for span in spans] if video else []
    alabels = [pads[span.angle][1].pop(0) for span in spans] if audio else []
    return PieceInputs(vlabels, alabels, bases, reads, input_of)


def _read_in(
    job: ExportJob, sources: dict[str, Source], span: Span, margin: Callable[[Source], Fraction]
) -> Fraction:
    """Where a span's entry starts (source time): `margin` before its first frame."""
    angle = job.angle(span.angle)
    source = sources[angle.source]
    read_in = span.start + Fraction(angle.sync_offset) - margin(source)
    if source.index is not None and not is_mov(source.info.format_name):
        # A seek by decode time (MPEG-TS) would land past the keyframe before read_in.
        read_in = source.index.seek_time(read_in)
    return read_in


def _warmed_up(spans: list[Span], read_ins: list[Fraction]) -> list[bool]:
    """Per span: whether a frame its input decodes after its own frames closes its trim
    without reading past it: the next span of its angle has a warm-up (its entry has an
    inpoint, and the keyframe at or before it lies at least `margin` before its first
    frame), or there is no next span (the input's end closes the trim)."""
    warmed = [True] * len(spans)
    last: dict[str, int] = {}
    for n, span in enumerate(spans):
        if span.angle in last:
            warmed[last[span.angle]] = read_ins[n] > 0  # ConcatList.add writes an inpoint
        last[span.angle] = n
    return warmed


def route(select: str, concat: ConcatList, count: int, joins: list[Fraction] | None = None) -> str:
    """Each frame of the list to the one branch of its entry (issue 18); at each join,
    the frames before `joins[j]` to the branch before (default: mid-gap, ConcatList).

    `split` gave every decoded frame to every branch of the angle, whose trims dropped all
    but their own: a thousand cuts cost a thousand visits per frame. `select` with one
    output per entry sends each frame to its own branch only (the output is 1 + the
    number of boundaries at or before its time), and like split it keeps running when a
    branch's trim has closed its output. The `segment` filter would do the same without
    an expression, but it ends the whole input when any output it still feeds is closed.
    """
    if count == 1:
        return "null" if select == "select" else "anull"
    at = concat.boundaries() if joins is None else joins
    terms = ["1", *(f"gte(t,{fmt(b)})" for b in at)]
    return f"{select}='{balanced_sum(terms)}':n={count}"


def balanced_sum(terms: list[str]) -> str:
    """A balanced sum: ffmpeg's expression parser refuses a chain of 100 or more terms."""
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    return f"({balanced_sum(terms[:half])}+{balanced_sum(terms[half:])})"


def command_args(graph: Graph, paths: PlanPaths) -> tuple[list[str], dict[Path, str]]:
    """-copyts, the inputs and the filter graph; the files to write before running."""
    text = ";\n".join(graph.chains)
    inputs = [arg for group in graph.inputs for arg in group]
    # -copyts: graph time = each list's own timeline, which the plan computed exactly.
    if len(text) <= GRAPH_INLINE_LIMIT:
        return ["-copyts", *inputs, "-filter_complex", text], dict(graph.files)
    # ffmpeg >= 7 reads an option's value from a file with the "-/" prefix.
    return (
        ["-copyts", *inputs, "-/filter_complex", str(paths.graph)],
        {**graph.files, paths.graph: text},
    )
