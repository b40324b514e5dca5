"""Benchmark of the multicam export: one command, sources generated once and cached.

    .venv/bin/python bench/export_bench.py            # 10 min, 1080p30, 3 angles, 60 cuts
    .venv/bin/python bench/export_bench.py --quick    # 1 min, 720p30, 20 cuts (a fast check)

    .venv/bin/python bench/export_bench.py --only reencode,copy,smart   # some of them

Reports, each measured in the same run:
  reencode time / one plain ffmpeg encode of a single source of the same length and size
                  with the same encoder settings (target <= 1.10)
  copy time     / `cat` of all the sources to /dev/null (target <= 3); with --cold both
                  read from the disk (the page cache is dropped first: root only)
  smart time    / reencode time (target <= 0.12), / copy time, and / its own floor: the
                  wall time of encoding just the partial GOPs at the cuts (the smart run's
                  encode commands alone, timed inside the same run)
  peak memory   of the Python side (the daemon's share: probing, planning, the copy remux)
                and of ffmpeg (the largest child), each measured in a fresh subprocess.

Cuts are placed off keyframes (0.1 to 1.9 s past a 2 s GOP boundary, spread evenly); the
angles' sync offsets are whole GOPs apart so stream copy finds clean keyframes near every cut.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from threadcpu import ThreadCpu  # noqa: E402

from spooler import spawn  # noqa: E402
from spooler.config import Settings  # noqa: E402
from spooler.export import ExportJob, ExportKind  # noqa: E402
from spooler.ffmpeg import FfmpegResult, Limits, find_ffmpeg, run_ffmpeg  # noqa: E402
from spooler.jobkind import Step  # noqa: E402
from spooler.s3.remotes import RemoteSources  # noqa: E402
from spooler.status import OutputInfo  # noqa: E402

HUES = (0, 120, 240)
OFFSETS = (0.0, 2.0, 4.0)  # whole GOPs: keyframes of all angles line up
GOP_SECONDS = 2


@dataclass(frozen=True)
class Variant:
    name: str
    seconds: int
    width: int
    height: int
    fps: int = 30
    cuts: int = 60
    mbps: int = 8  # source video bitrate, like a consumer camera's
    # heavy: H.264 High at CRF 16 (~15 Mbit/s measured on these pictures), 2 B-frames,
    # closed 2 s GOPs, like a camera's or a phone's (issue 18); the export at CRF 16 too.
    heavy: bool = False
    crf: int = 23
    # Length of the generated sources when it differs from the timeline's (0: the same):
    # `--minutes` cuts shorter timelines from the 5-minute heavy sources.
    source_seconds: int = 0

    @property
    def source_length(self) -> int:
        return self.source_seconds or self.seconds


FULL = Variant("full", 600, 1920, 1080)
QUICK = Variant("quick", 60, 1280, 720, cuts=20, mbps=4)  # 2 s GOPs: 20 cuts still fit
HEAVY_UNIT = 62  # seconds of unique pictures per heavy angle (31 GOPs)
HEAVY = Variant("heavy", 300, 1920, 1080, cuts=30, mbps=0, heavy=True, crf=16)
HEAVY_QUICK = Variant("heavyquick", 30, 1920, 1080, cuts=6, mbps=0, heavy=True, crf=16)
VARIANTS = {v.name: v for v in (FULL, QUICK, HEAVY, HEAVY_QUICK)}


def heavy_minutes(minutes: int) -> Variant:
    """The issue's heavy shape on `minutes` of timeline: 6 cuts a minute (30 in 5 minutes),
    cut from the 5-minute heavy sources (longer ones are generated when asked for)."""
    seconds = 60 * minutes
    return replace(HEAVY, seconds=seconds, cuts=6 * minutes, source_seconds=max(300, seconds))


def source_path(variant: Variant, angle: int) -> Path:
    rate = "crf16" if variant.heavy else f"{variant.mbps}M"
    return CACHE / (
        f"{variant.name}_{variant.width}x{variant.height}_{variant.source_length}s_{rate}_"
        f"cam{angle}.mp4"
    )


def source_codec_args(variant: Variant) -> list[str]:
    if variant.heavy:
        # superfast: generation time only; the stream's decode cost comes from the
        # bitrate, the High profile's CABAC and 8x8 transforms, and the B-frames.
        return ["-c:v", "libx264", "-preset", "superfast", "-profile:v", "high",
                "-crf", "16", "-bf", "2", "-flags", "+cgop"]  # fmt: skip
    return ["-c:v", "libx264", "-preset", "ultrafast", "-b:v", f"{variant.mbps}M",
            "-maxrate", f"{variant.mbps * 1.25:g}M", "-bufsize", f"{variant.mbps * 2}M",
            "-bf", "3"]  # fmt: skip


def generate(ffmpeg: str, variant: Variant) -> list[Path]:
    """Three angles: testsrc2 in distinct hues with noise and a tone; x264 at a camera's
    bitrate, 2 s GOP, 3 B-frames."""
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = []
    for angle, (hue, offset) in enumerate(zip(HUES, OFFSETS, strict=True), start=1):
        path = source_path(variant, angle)
        paths.append(path)
        if path.exists():
            continue
        seconds = variant.source_length + offset + 1
        size = f"{variant.width}x{variant.height}"
        tmp = path.with_suffix(".part.mp4")
        # Heavy sources: a unique stretch of at most HEAVY_UNIT seconds (whole GOPs),
        # repeated by stream copy: decoding costs the same, generating 5x less.
        unit = path.with_suffix(".unit.mp4")
        looped = variant.heavy and seconds > HEAVY_UNIT
        if looped:
            final, tmp, seconds = tmp, unit, HEAVY_UNIT
        print(f"generating {path.name} ({seconds:g} s)...", flush=True)
        subprocess.run(
            [
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                # Temporal noise gives the pictures a camera's entropy, hence a camera's bitrate.
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={size}:rate={variant.fps}:duration={seconds},"
                f"hue=h={hue},noise=alls={1 if variant.heavy else 12}:allf=t",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency={440 * angle}:sample_rate=48000:duration={seconds}",
                *source_codec_args(variant),
                "-pix_fmt",
                "yuv420p",
                "-g",
                str(GOP_SECONDS * variant.fps),
                "-keyint_min",
                str(GOP_SECONDS * variant.fps),
                "-sc_threshold",
                "0",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                "-f",
                "mp4",
                str(tmp),
            ],
            check=True,
        )
        if looped:
            # The video repeated by stream copy, whole units only: a copy cut inside a GOP
            # leaves its last B-frames out, a gap in the timestamps that makes the angle
            # variable-rate (smart render then falls back to reencode). The sound encoded
            # afresh for the same length (repeated AAC drifts: 64 ms short after 5 loops).
            loops = math.ceil((variant.source_length + offset + 1) / HEAVY_UNIT)
            subprocess.run(
                [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
                 "-stream_loop", str(loops - 1), "-i", str(unit),
                 "-f", "lavfi", "-i",
                 f"sine=frequency={440 * angle}:sample_rate=48000:duration={loops * HEAVY_UNIT}",
                 "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                 "-c:a", "aac", "-b:a", "128k", "-f", "mp4", str(final)],
                check=True,
            )  # fmt: skip
            unit.unlink()
            tmp = final
        tmp.rename(path)
    return paths


def job(variant: Variant, mode: str, preset: str) -> dict[str, Any]:
    """60 cuts rotating through the angles, each off a keyframe: at 0.1 to 1.9 s past a
    GOP boundary, spread evenly (golden-ratio steps), as an editor's cuts fall wherever."""
    step = variant.seconds / (variant.cuts + 1)
    bounds = [0.0]
    for i in range(1, variant.cuts + 1):
        t = i * step
        past = 0.1 + (i * 0.618034 % 1) * (GOP_SECONDS - 0.2)
        bounds.append(round(t - t % GOP_SECONDS + past, 3))
    bounds.append(float(variant.seconds))
    return {
        "angles": [
            {"id": f"cam{i}", "source": source_path(variant, i).name, "syncOffset": OFFSETS[i - 1]}
            for i in (1, 2, 3)
        ],
        "segments": [
            {"angle": f"cam{i % 3 + 1}", "start": bounds[i], "end": bounds[i + 1]}
            for i in range(len(bounds) - 1)
        ],
        "mode": mode,
        "output": {"preset": preset, "crf": variant.crf}
        if mode in ("reencode", "smart")
        else {"videoCodec": "copy"},
    }


@dataclass
class BenchContext:
    """A minimal JobContext: runs ffmpeg through spooler.ffmpeg.run_ffmpeg, records little."""

    job_dir: Path
    settings: Settings
    ffmpeg: str
    job_id: str = "bench"
    warnings: list[dict[str, Any]] = field(default_factory=list)
    preflight: dict[str, Any] = field(default_factory=dict)
    log: io.StringIO = field(default_factory=io.StringIO)
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # step, start, end
    remote_sources: RemoteSources = field(default_factory=RemoteSources)  # none used here

    def declare_steps(self, steps: list[Step]) -> None:
        pass

    def declare_outputs(self, names: list[str]) -> None:
        pass

    def run_ffmpeg(
        self,
        args: list[str],
        *,
        step: str,
        expected_seconds: float,
        pass_fds: tuple[int, ...] = (),
    ) -> FfmpegResult:
        limits = Limits(deadline=None, stall_seconds=300, kill_grace_seconds=3, nice=0)
        args = with_design(args, os.environ.get("SPOOLER_BENCH_DESIGN", ""))
        started = time.perf_counter()
        result = run_ffmpeg(
            self.ffmpeg,
            args,
            expected_seconds=expected_seconds,
            limits=limits,
            log=self.log,
            on_progress=lambda f, s: None,
            cancelled=lambda: False,
            pass_fds=pass_fds,
        )
        self.spans.append((step, started, time.perf_counter()))
        return result

    def temp_path(self, name: str) -> Path:
        return self.job_dir / f".tmp-{name}"

    def encoded(self) -> None:
        pass

    def publish(self, temp: Path, name: str, info: OutputInfo) -> None:
        temp.rename(self.job_dir / name)

    def warn(self, code: str, message: str, **details: Any) -> None:
        self.warnings.append({"code": code, **details})

    def set_preflight(self, report: dict[str, Any]) -> None:
        self.preflight = report

    def log_line(self, text: str) -> None:
        self.log.write(text + "\n")

    def report_progress(self, step: str, fraction: float) -> None:
        pass

    def check_cancelled(self) -> None:
        pass


# Threading designs compared on the reencode (issue 18): options put before every input
# (decoders) or before the first (global), on the plan's own command.
DESIGNS: dict[str, tuple[list[str], list[str]]] = {
    "": ([], []),  # the plan as it is
    "frame": (["-thread_type", "frame+slice"], []),  # before issue 18: frame threads too
    "dec1": (["-threads", "1"], []),  # decoders without frame threads
    "dec2": (["-threads", "2"], []),
    "slice": (["-thread_type", "slice"], []),  # decoders with slice threads only
    "fct1": ([], ["-filter_complex_threads", "1"]),  # no slice threads in the graph
    "dec1fct1": (["-threads", "1"], ["-filter_complex_threads", "1"]),
    "buf16": ([], ["-filter_buffered_frames", "16"]),
    "nofps": ([], []),  # see NOFPS  # ffmpeg 8+: cap the graph's queues
    # The graph before issue 18's change, in parts (plan_design): `split` routes every frame
    # to every branch of its angle; `fps` sends every read through fps/tpad; `before` both.
    "split": ([], []),
    "fps": ([], []),
    "before": ([], []),
}


def plan_design(design: str) -> None:
    """Designs that change the plan itself, for a comparison in the same run (this runs in
    the measurement's own subprocess)."""
    from spooler.export import graph, readchain

    if design in ("split", "before"):

        def split(select: str, concat: object, count: int) -> str:
            return f"{'split' if select == 'select' else 'asplit'}={count}"

        setattr(graph, "route", split)  # noqa: B010
    if design in ("fps", "before"):
        setattr(readchain, "exact_window", lambda *args: None)  # noqa: B010


# A graph edit, not an option: each branch without its fps and tpad filters (an experiment:
# exact only for constant-rate sources at the output rate, where every output frame has one
# source frame; the plan keeps them for mixed and variable-rate sources).
NOFPS = re.compile(r",fps=fps=[^,;]+,tpad=stop=2:stop_mode=clone")


def with_design(args: list[str], design: str) -> list[str]:
    if design == "nofps":
        return [NOFPS.sub("", arg) for arg in args]
    per_input, global_ = DESIGNS[design]
    out: list[str] = [*global_]
    for arg in args:
        if arg == "-i":
            out += per_input
        out.append(arg)
    return out


def measure(what: str, variant: Variant, preset: str) -> dict[str, Any]:
    """Run one measurement in THIS process (called in a fresh subprocess by main), with
    ffmpeg's CPU split by component (its named threads: threadcpu.py)."""
    # Not the job's CPU: this interpreter's start-up and imports (a daemon pays them once,
    # not per job) and the thread sampler's own work.
    # Nor deleting the previous run's outputs (~0.1 s of CPU for a 600 MB file).
    work = work_dir(what, variant)
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():
        old.unlink()
    startup = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    with ThreadCpu().running() as sampler:
        result = _measure(what, variant, preset)
    overhead = startup + sampler.own_cpu
    result["cpu_seconds"] -= overhead
    result["python_cpu_seconds"] -= overhead
    return {
        **result,
        "bench_overhead_cpu_seconds": round(overhead, 3),
        "cpu_by_component": sampler.by_component(),
        "cpu_by_thread_name": sampler.by_thread_name(),
    }


def work_dir(what: str, variant: Variant) -> Path:
    return CACHE / "work" / variant.name / what


def _measure(what: str, variant: Variant, preset: str) -> dict[str, Any]:
    ffmpeg = find_ffmpeg(None)
    work = work_dir(what, variant)
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if what == "baseline":
        # One plain encode of one source of the same length, same encoder settings.
        src = source_path(variant, 1)
        subprocess.run(
            [
                ffmpeg,
                "-hide_banner",
                "-nostdin",
                "-y",
                "-loglevel",
                "error",
                "-t",
                str(variant.seconds),
                "-i",
                str(src),
                "-map",
                "0:v",
                "-map",
                "0:a",
                "-c:v",
                "libx264",
                "-preset",
                preset,
                "-crf",
                str(variant.crf),
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "192k",
                "-movflags",
                "+faststart",
                str(work / "plain.mp4"),
            ],
            check=True,
        )
    elif what == "floor":
        # The reencode's floor (issue 18): the same encoder fed by a decoder of exactly the
        # frames the edit needs, each segment decoded from its preceding keyframe, nothing
        # else: one ffconcat list of the segments in timeline order (the demuxer seeks to
        # the keyframe before each inpoint), the frames before an inpoint dropped by the
        # constant-rate output, no filter graph.
        listing = work / "floor.ffconcat"
        listing.write_text(needed_frames_list(variant))
        subprocess.run(
            [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
             "-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v", "-map", "0:a",
             *encode_args(variant, preset, variant.fps), str(work / "floor.mp4")],
            check=True,
        )  # fmt: skip
        extra = {"frames": count_frames(work / "floor.mp4")}
    elif what.startswith("scale-"):
        what, _, design = what.partition(":")
        plan_design(design)
        _, cuts, angles = what.split("-")
        settings = Settings(media_roots=[CACHE], spool_dir=work)
        ctx = BenchContext(work, settings, ffmpeg)
        spec = scaling_job(variant, int(cuts), int(angles), preset)
        ExportKind().run(ExportJob.model_validate(spec), ctx)
        extra = {"segments": len(spec["segments"])}
    elif what == "cat":
        for src in (source_path(variant, i) for i in (1, 2, 3)):
            subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)
    else:
        what, _, design = what.partition(":")
        os.environ["SPOOLER_BENCH_DESIGN"] = design
        plan_design(design)
        settings = Settings(media_roots=[CACHE], spool_dir=work)
        ctx = BenchContext(work, settings, ffmpeg)
        ExportKind().run(ExportJob.model_validate(job(variant, what, preset)), ctx)
        extra = {
            "path": ctx.preflight.get("path"),
            "snapped": len(ctx.warnings),
            # Wall time of each ffmpeg step (smart: the audio bed, each encoder process).
            "steps": [[step, round(b - a, 3)] for step, a, b in ctx.spans],
        }
        if what == "smart" and extra["path"] != "smart":
            # A fallback would be timed as smart: the figure would be the reencode's.
            raise SystemExit(f"smart fell back to {extra['path']}: {ctx.preflight.get('reason')}")
        encodes = [(a, b) for step, a, b in ctx.spans if step.startswith("encode ")]
        if what == "smart" and encodes:
            output = ctx.preflight.get("output", {})
            extra |= {
                "floor_seconds": max(b for _, b in encodes) - min(a for a, _ in encodes),
                "encoded_frames": output.get("encodedFrames"),
                "frames": output.get("frames"),
            }
    elapsed = time.perf_counter() - started
    spawn.shutdown()  # ffmpeg's parent is the spawn helper: reap it to count their CPU
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    if what == "smart":  # after the usage: not part of the measured CPU
        extra["decoded_frames"] = smart_decoded_frames(variant, preset)
    return {
        "seconds": elapsed,
        # CPU time is what another busy process on the machine cannot inflate.
        "cpu_seconds": sum(u.ru_utime + u.ru_stime for u in usage),
        # The Python side alone (probe, packet scan, planning, the copy remux).
        "python_cpu_seconds": usage[0].ru_utime + usage[0].ru_stime,
        "python_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "load_at_end": os.getloadavg()[0],
        **extra,
    }


def needed_frames_list(variant: Variant) -> str:
    """An ffconcat list of the edit's segments in timeline order: decoding it decodes the
    frames the edit needs, each segment from the keyframe before its inpoint."""
    spec = job(variant, "reencode", "veryfast")
    offsets = {a["id"]: a["syncOffset"] for a in spec["angles"]}
    names = {a["id"]: a["source"] for a in spec["angles"]}
    lines = ["ffconcat version 1.0"]
    for seg in spec["segments"]:
        lines += [
            f"file '{CACHE / names[seg['angle']]}'",
            f"inpoint {seg['start'] + offsets[seg['angle']]:.6f}",
            f"outpoint {seg['end'] + offsets[seg['angle']]:.6f}",
        ]
    return "\n".join(lines) + "\n"


def smart_decoded_frames(variant: Variant, preset: str) -> dict[str, int]:
    """What smart's decoders decode, from its plan's parts: the encoded frames, the warm-up
    from the keyframe before each part (its input starts 2 frames early), and the frames
    decoded past each part (those decoded before its last frame's last needed packet:
    graph.piece_inputs reads no margin past an MP4 part; the interleave lead, if any, is
    not counted). Non-reference pictures the decoders skip are counted too."""
    import bisect

    from spooler.export.gop import split_piece
    from spooler.export.smart import smart_blockers
    from spooler.export.sources import close_sources, inspect_sources
    from spooler.export.timeline import frame_index, job_pieces, quantise

    spec = ExportJob.model_validate(job(variant, "smart", preset))
    used = list(dict.fromkeys(p.angle for p in job_pieces(spec)))
    sources = inspect_sources(spec, [CACHE], set(used))
    try:
        _, frames = smart_blockers(spec, sources, used)
        fps = Fraction(variant.fps)
        counts = dict.fromkeys(("encoded", "warmup", "after", "parts"), 0)
        for piece in quantise(job_pieces(spec), fps):
            angle, angle_frames = spec.angle(piece.angle), frames[piece.angle]
            index = sources[angle.source].index
            assert index is not None
            shift = frame_index(Fraction(angle.sync_offset) - index.time(angle_frames.first), fps)
            for part in split_piece(angle_frames, piece.first + shift, piece.stop + shift, True):
                if part.kind == "encode":
                    heads = angle_frames.heads
                    key = heads[max(0, bisect.bisect_right(heads, part.start - 2) - 1)]
                    counts["encoded"] += part.frames
                    counts["warmup"] += part.start - key
                    end = angle_frames.first + part.stop * angle_frames.step
                    needed = index.last_needed_decode(index.time(end))  # as the plan reads
                    assert needed is not None
                    counts["after"] += sum(
                        p.pts >= end and index.time(p.dts) <= needed for p in index.packets
                    )
                    counts["parts"] += 1
        return counts
    finally:
        close_sources(sources)


def scaling_job(variant: Variant, cuts: int, angles: int, preset: str) -> dict[str, Any]:
    """`cuts` evenly spaced cuts (each 0.4 frame off the even grid, so never on a GOP
    boundary) rotating through `angles` angles; angle k reads source k mod 3 (a decoder per
    angle all the same)."""
    step = Fraction(variant.seconds) / (cuts + 1)
    bounds = [Fraction(0)] + [i * step for i in range(1, cuts + 1)] + [Fraction(variant.seconds)]
    frame = Fraction(1, variant.fps)
    bounds = [round(b / frame) * frame for b in bounds]
    return {
        "angles": [
            {
                "id": f"cam{k}",
                "source": source_path(variant, k % 3 + 1).name,
                "syncOffset": OFFSETS[k % 3],
            }
            for k in range(angles)
        ],
        "segments": [
            {"angle": f"cam{i % angles}", "start": float(a), "end": float(b)}
            for i, (a, b) in enumerate(itertools.pairwise(bounds))
            if b > a
        ],
        "mode": "reencode",
        "output": {"preset": preset, "crf": variant.crf},
    }


def encode_args(variant: Variant, preset: str, fps: int) -> list[str]:
    """The x264 + AAC settings the reencode plan uses for this bench's job."""
    return ["-c:v", "libx264", "-preset", preset, "-crf", str(variant.crf),
            "-pix_fmt", "yuv420p", "-r", str(fps), "-fps_mode", "cfr",
            "-c:a", "aac", "-b:a", "192k", "-ar", "48000",
            "-movflags", "+faststart"]  # fmt: skip


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.demux(video=0) if _.size)


def drop_page_cache() -> bool:
    """Evict cached file pages (root only) so `cat` and copy both read from the disk."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def run_measure(what: str, variant: Variant, preset: str, cold: bool = False) -> dict[str, Any]:
    if cold and not drop_page_cache():
        raise SystemExit("--cold needs root (writes /proc/sys/vm/drop_caches)")
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            what,
            "--variant",
            variant.name,
            "--preset",
            preset,
            *(["--minutes", str(variant.seconds // 60)] if variant.source_seconds else []),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def scaling(variant: Variant, preset: str, designs: list[str], points: str) -> None:
    load = os.getloadavg()[0]
    print(f"\n{variant.seconds} s {variant.width}x{variant.height}, reencode, load {load:.1f}\n")
    print("| cuts | angles | design | wall | CPU | ffmpeg peak RSS | python peak RSS | load |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    chosen = [tuple(int(n) for n in p.split("x")) for p in points.split(",")]
    for cuts, angles in chosen:
        for design in ["", *designs]:  # alternated: the same load for each design
            name = f"{cuts}x{angles}" + (f":{design}" if design else "")
            try:
                r = run_measure(f"scale-{cuts}-{angles}:{design}", variant, preset)
            except SystemExit as exc:  # the first point where something runs out
                print(f"| {cuts} | {angles} | {design} | failed: {str(exc)[-300:]!r} |")
                continue
            r["load"] = os.getloadavg()[0]
            rows[name] = r
            cells = [design or "plan", f"{r['seconds']:.1f} s", f"{r['cpu_seconds']:.1f} s",
                     f"{r['child_peak_mb']:.0f} MB", f"{r['python_peak_mb']:.0f} MB",
                     f"{r['load']:.1f}"]  # fmt: skip
            print(f"| {cuts} | {angles} | " + " | ".join(cells) + " |", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scaling_{variant.name}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"variant": variant.__dict__, "load": load, "rows": rows}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 minute of 720p instead of 10 of 1080p"
    )
    parser.add_argument("--preset", default="veryfast", help="x264 preset for both encodes")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best is kept")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before cat and copy (root; affects the host)",
    )
    parser.add_argument(
        "--only",
        default="cat,baseline,floor,reencode,copy,smart",
        help="comma-separated measures to run (default: all)",
    )
    parser.add_argument(
        "--designs",
        default="",
        help="comma-separated threading designs of the reencode to compare, each measured "
        f"as reencode:<design> (one of {', '.join(d for d in DESIGNS if d)})",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default=None,
        help="full (default), quick, heavy (5 min 1080p30 H.264 High CRF 16, 30 cuts) or "
        "heavyquick (30 s of the same, 6 cuts)",
    )
    parser.add_argument(
        "--minutes",
        type=int,
        default=0,
        help="the heavy variant on N minutes of timeline, 6 cuts a minute (issue 18's shape: "
        "5 minutes, 30 cuts); from the 5-minute heavy sources when N <= 5",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="reencode with 10/100/1000 cuts (3 angles) and 2/4/8 angles (100 cuts) on the "
        "same timeline: wall, CPU and peak memory",
    )
    parser.add_argument(
        "--points",
        default="10x3,100x3,1000x3,100x2,100x4,100x8",
        help="--scaling: the (cuts)x(angles) points to run",
    )
    parser.add_argument("--generate-only", action="store_true", help="make the sources, stop")
    args = parser.parse_args()
    variant = QUICK if args.quick else VARIANTS[args.variant or "full"]
    if args.minutes:
        if args.quick or args.variant not in (None, "heavy"):
            parser.error("--minutes goes with the heavy variant only")
        variant = heavy_minutes(args.minutes)
    if args.measure:
        print(json.dumps(measure(args.measure, variant, args.preset)))
        return
    generate(find_ffmpeg(None), variant)
    if args.generate_only:
        return
    if args.scaling:
        scaling(variant, args.preset, [d for d in args.designs.split(",") if d], args.points)
        return
    run_measure("cat", variant, args.preset)  # warm the page cache first: both sides fair
    load = os.getloadavg()[0]
    # Alternate the runs and keep each one's best: another process's burst hits one run.
    runs: dict[str, list[dict[str, Any]]] = {}
    order = ("cat", "baseline", "floor", "reencode", "copy", "smart")
    chosen = [w for w in order if w in args.only.split(",")]
    chosen += [f"reencode:{d}" for d in args.designs.split(",") if d]
    for _ in range(args.repeat):
        for what in chosen:
            cold = args.cold and what in ("cat", "copy")
            runs.setdefault(what, []).append(run_measure(what, variant, args.preset, cold))
    results = {what: min(rs, key=lambda r: r["seconds"]) for what, rs in runs.items()}
    if "smart" in results and "floor_seconds" in results["smart"]:
        smart = results["smart"]
        results["smart_floor"] = {
            "seconds": smart["floor_seconds"],
            "cpu_seconds": None,  # its encoders' CPU is part of the smart run's
            "python_peak_mb": 0.0,
            "child_peak_mb": 0.0,
        }
    rows = []
    pairs = [
        ("reencode / plain encode", "reencode", "baseline", "<= 1.15"),
        ("reencode / its floor (the encoder fed the needed frames)", "reencode", "floor",
         "wall <= 1.10, CPU <= 1.05"),
        ("floor / plain encode", "floor", "baseline", ""),
    ]  # fmt: skip
    pairs += [(f"{w} / its floor", w, "floor", "") for w in chosen if ":" in w]
    for name, a, b, target in (
        *pairs,
        ("copy / cat of sources", "copy", "cat", "<= 3"),
        ("smart / reencode", "smart", "reencode", "<= 0.12"),
        ("smart / copy", "smart", "copy", ""),
        ("smart / its floor (encoding the partial GOPs alone)", "smart", "smart_floor", ""),
    ):
        if a not in results or b not in results:
            continue
        ra, rb = results[a], results[b]
        rows.append(
            (
                name,
                f"{ra['seconds']:.2f} s / {rb['seconds']:.2f} s",
                f"{ra['seconds'] / rb['seconds']:.2f}",
                f"{ra['cpu_seconds']:.1f} s / {rb['cpu_seconds']:.1f} s = "
                f"{ra['cpu_seconds'] / max(rb['cpu_seconds'], 1e-3):.2f}"
                if rb["cpu_seconds"] is not None
                else "n/a",
                target,
            )
        )
    size = sum(source_path(variant, i).stat().st_size for i in (1, 2, 3)) / 1e6
    print(
        f"\n{variant.seconds} s, {variant.width}x{variant.height}@{variant.fps}, 3 angles "
        f"({size:.0f} MB), {variant.cuts} cuts off keyframes, x264 preset {args.preset}, "
        f"best of {args.repeat}, {'cold' if args.cold else 'warm'} page cache for cat/copy, "
        f"load average {load:.1f} at start\n"
    )
    print("| measure | wall time | ratio | CPU time (ratio) | target |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| run | python peak RSS | ffmpeg peak RSS |\n|---|---|---|")
    for what in (
        "baseline",
        "floor",
        "reencode",
        *(w for w in chosen if ":" in w),
        "copy",
        "smart",
    ):
        if what in results:
            r = results[what]
            print(f"| {what} | {r['python_peak_mb']:.0f} MB | {r['child_peak_mb']:.0f} MB |")
    if "copy" in results:
        copy = results["copy"]
        print(f"\ncopy path: {copy.get('path')}, {copy.get('snapped')} cuts snapped")
    if "smart" in results:
        smart = results["smart"]
        print(
            f"smart path: {smart.get('path')}, {smart.get('encoded_frames')} of "
            f"{smart.get('frames')} frames encoded; frames decoded: {smart.get('decoded_frames')}"
            f"; CPU by component: {smart.get('cpu_by_component')}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"export_{variant.name}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {"variant": variant.__dict__, "preset": args.preset, "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
