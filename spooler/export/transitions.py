"""Transitions at cuts, inside the reencode's one filter graph (pure: data in, graph text out).

Timing rule: a transition of duration d at a cut at timeline time T is CENTRED on the cut.
Its window is the output frames [s, e) with s = round((T - d/2) fps), e = round((T + d/2)
fps), each end rounded once from its absolute time, like every cut (timeline.py); the cut
itself stays at frame c = round(T fps). No frame is added or removed: the output has exactly
the frames of the same edit with hard cuts, so the total duration never drifts.

- crossfade: the outgoing angle keeps running to e and the incoming one starts at s, each
  read from its own source through its sync offset (the sources must cover that: coverage
  is checked with the transition's JSON path as the label). Window frame s + j shows
  j/n of the incoming angle (n = e - s): the first window frame is still all outgoing, the
  cut frame c is an even blend (for even n), the frame after the window all incoming.
- fadeblack / fadewhite: a dip through the colour, without overlap: the outgoing angle fades
  to the colour over [s, c) (frame s still full), frame c IS the colour, and the incoming
  angle fades in over [c, e).
A window shorter than 2 frames is a hard cut. Audio, when it follows the picture, does the
same over the same window (in samples): crossfaded, or a dip to silence and back.

With a range, the windows are those of the whole timeline, clipped: a range that starts or
ends inside a window shows the same frames as the whole export would there.

The graph is built as "reads" (each one stretch of one angle, rendered by the reencode's
per-piece chain) composed into "parts" (the segments the concat filter joins): a part is a
read (solo, perhaps with fades), or two reads joined by xfade / acrossfade (crossfade).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from spooler.export.commands import fmt, rate_text
from spooler.export.models import ExportJob
from spooler.export.timeline import FramePiece, frame_index

FADE_COLOURS = {"fadeblack": "black", "fadewhite": "white"}


@dataclass(frozen=True)
class Window:
    """A transition in output frames: [first, stop) around the cut frame `cut`."""

    kind: str  # crossfade | fadeblack | fadewhite
    first: int
    cut: int
    stop: int
    out_angle: str
    in_angle: str
    label: str  # the transition's JSON path: "segments[3].transition", "transition"

    @property
    def frames(self) -> int:
        return self.stop - self.first


@dataclass(frozen=True)
class Fade:
    """A fade of one read: frames [first, stop) on the timeline; `out` to or `in` from colour."""

    out: bool
    colour: str
    first: int
    stop: int


@dataclass(frozen=True)
class Part:
    """One segment of the concat: output frames [first, stop).

    Solo: `reads` is one read whose frames start at `lead` <= first (earlier frames are
    rendered only so that a fade clipped by the range has the right levels) with `fades`.
    Crossfade: `reads` is (outgoing, incoming), both over the whole window.
    """

    first: int
    stop: int
    reads: tuple[int, ...]
    window: Window | None = None
    fades: tuple[Fade, ...] = ()
    lead: int = 0  # first frame of the (solo) read


@dataclass(frozen=True)
class Layout:
    reads: list[FramePiece]  # what each branch renders, in order; labels name its origin
    parts: list[Part]
    windows: list[Window]

    @property
    def plain(self) -> bool:
        """Hard cuts only: parts are the reads, one for one (the graph of today's cuts)."""
        return not self.windows


def job_windows(job: ExportJob, fps: Fraction) -> list[Window]:
    """Every transition of the whole edit (not clipped to the range), as frame windows."""
    name, segments = job.edit_segments()
    out: list[Window] = []
    for j in range(1, len(segments)):
        seg, previous = segments[j], segments[j - 1]
        if seg.angle == previous.angle:
            continue  # same angle: no cut, nothing to transition
        spec = seg.transition or job.transition
        if spec is None or spec.type == "cut":
            continue
        at, half = Fraction(seg.start), Fraction(spec.duration) / 2
        first, stop = frame_index(at - half, fps), frame_index(at + half, fps)
        if stop - first < 2:
            continue  # shorter than two frames: a hard cut
        label = f"{name}[{j}].transition" if seg.transition is not None else "transition"
        out.append(
            Window(
                spec.type,
                first,
                frame_index(at, fps),
                stop,
                previous.angle,
                seg.angle,
                label,
            )
        )
    return out


def layout(job: ExportJob, frames: list[FramePiece], fps: Fraction) -> Layout:
    """The reads and parts of the output frames [frames[0].first, frames[-1].stop)."""
    start, end = frames[0].first, frames[-1].stop
    windows = [w for w in job_windows(job, fps) if w.stop > start and w.first < end]
    if not windows:
        plain = [Part(p.first, p.stop, (i,), lead=p.first) for i, p in enumerate(frames)]
        return Layout(list(frames), plain, [])
    reads: list[FramePiece] = []
    parts: list[Part] = []
    fade_windows = [w for w in windows if w.kind in FADE_COLOURS]

    def solo(lo: int, hi: int) -> None:
        for piece in frames:
            a, b = max(lo, piece.first), min(hi, piece.stop)
            if b <= a:
                continue
            fades: list[Fade] = []
            for w in fade_windows:
                colour = FADE_COLOURS[w.kind]
                if w.out_angle == piece.angle and w.first < b and w.cut > a:
                    fades.append(Fade(True, colour, w.first, w.cut))
                if w.in_angle == piece.angle and w.cut < b and w.stop > a:
                    fades.append(Fade(False, colour, w.cut, w.stop))
            lead = min([a, *(f.first for f in fades)])
            reads.append(FramePiece(piece.angle, lead, b, piece.label))
            parts.append(Part(a, b, (len(reads) - 1,), None, tuple(fades), lead))

    position = start
    for w in (w for w in windows if w.kind == "crossfade"):
        lo, hi = max(w.first, start), min(w.stop, end)
        solo(position, lo)
        reads.append(FramePiece(w.out_angle, w.first, w.stop, w.label))
        reads.append(FramePiece(w.in_angle, w.first, w.stop, w.label))
        parts.append(Part(lo, hi, (len(reads) - 2, len(reads) - 1), w))
        position = hi
    solo(position, end)
    return Layout(reads, parts, windows)


def is_plain(part: Part) -> bool:
    """A part that is one read as it is: compose_video passes its label to the concat."""
    return part.window is None and not part.fades and part.lead == part.first


def _trim(part: Part, origin: int) -> str:
    """Keep frames [part.first, part.stop) of a branch whose first frame is `origin`."""
    if part.first == origin and (part.window is None or part.stop == part.window.stop):
        return ""
    return (
        f",trim=start_frame={part.first - origin}:end_frame={part.stop - origin}"
        ",setpts=PTS-STARTPTS"
    )


def compose_video(
    chains: list[str],
    plan: Layout,
    labels: list[str],
    fps: Fraction,
    size: tuple[int, int],
) -> list[str]:
    """Chains that turn the reads' video labels into one label per part, in order.

    Every blend is xfade's linear `fade` in YUV (frames outside a window pass through
    untouched): between two reads for a crossfade, between a read and a `color` source of
    the output's size for a dip (ffmpeg's `fade` filter would convert the whole part to RGB
    for any colour but black).
    """
    if plan.plain:
        return labels
    out: list[str] = []
    for i, part in enumerate(plan.parts):
        if part.window is not None:
            a, b = (labels[r] for r in part.reads)
            chains.append(f"{a}format=yuv420p[xa{i}]")
            chains.append(f"{b}format=yuv420p[xb{i}]")
            chains.append(
                f"[xa{i}][xb{i}]{_xfade(part.window.frames, 0, fps)}"
                f"{_trim(part, part.window.first)}[p{i}]"
            )
        elif part.fades or part.lead != part.first:
            current = f"[f{i}_0]"
            chains.append(f"{labels[part.reads[0]]}format=yuv420p{current}")
            for m, fade in enumerate(part.fades, start=1):
                frames = fade.stop - fade.first
                colour = f"[c{i}_{m}]"
                chains.append(
                    f"color=c={fade.colour}:s={size[0]}x{size[1]}:r={rate_text(fps)},"
                    f"format=yuv420p,setsar=1,trim=end_frame={frames}{colour}"
                )
                pair = current + colour if fade.out else colour + current
                current = f"[f{i}_{m}]"
                xfade = _xfade(frames, fade.first - part.lead, fps)
                chains.append(f"{pair}{xfade}{current}")
            chains.append(f"{current}null{_trim(part, part.lead)}[p{i}]")
        else:
            out.append(labels[part.reads[0]])
            continue
        out.append(f"[p{i}]")
    return out


def _xfade(frames: int, offset: int, fps: Fraction) -> str:
    """A linear blend over `frames` frames from frame `offset` of the first input on."""
    return f"xfade=transition=fade:duration={fmt(frames / fps)}:offset={fmt(offset / fps)}"


def compose_audio(
    graph_chains: list[str],
    plan: Layout,
    labels: list[str],
    sample: Callable[[int], int],
    click_fade: int,
) -> list[str]:
    """The same for audio (follow mode): each read's label holds exactly its frames' samples
    (`sample(frame)` is the timeline sample where a frame starts). Crossfades and dips use
    the windows in samples; `click_fade` samples fade each side of a hard cut, as today."""
    out: list[str] = []
    for i, part in enumerate(plan.parts):
        first, stop = sample(part.first), sample(part.stop)
        if part.window is not None:
            a, b = (labels[r] for r in part.reads)
            w = part.window
            count = sample(w.stop) - sample(w.first)
            chain = f"{a}{b}acrossfade=ns={count}:c1=tri:c2=tri"
            if (first, stop) != (sample(w.first), sample(w.stop)):
                chain += (
                    f",atrim=start_sample={first - sample(w.first)}"
                    f":end_sample={stop - sample(w.first)},asetpts=N/SR/TB"
                )
            graph_chains.append(f"{chain}[q{i}]")
            out.append(f"[q{i}]")
            continue
        origin = sample(part.lead)
        steps = [
            f"afade=t={'out' if f.out else 'in'}:ss={sample(f.first) - origin}"
            f":ns={sample(f.stop) - sample(f.first)}"
            for f in part.fades
        ]
        if origin != first:
            steps.append(f"atrim=start_sample={first - origin},asetpts=N/SR/TB")
        # A hard edge (another angle's solo part, or the output's start or end) gets the
        # click fade, unless a dip already reaches silence there.
        count = stop - first
        neighbours = (
            plan.parts[i - 1] if i else None,
            plan.parts[i + 1] if i + 1 < len(plan.parts) else None,
        )
        dipped = {f.first if not f.out else f.stop for f in part.fades}
        if count > 2 * click_fade:
            if (neighbours[0] is None or neighbours[0].window is None) and part.first not in dipped:
                steps.append(f"afade=t=in:ss=0:ns={click_fade}")
            if (neighbours[1] is None or neighbours[1].window is None) and part.stop not in dipped:
                steps.append(f"afade=t=out:ss={count - click_fade}:ns={click_fade}")
        if steps:
            graph_chains.append(f"{labels[part.reads[0]]}{','.join(steps)}[q{i}]")
            out.append(f"[q{i}]")
        else:
            out.append(labels[part.reads[0]])
    return out
