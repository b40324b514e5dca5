"""Benchmark: three renditions in ONE export job against the same three made separately.

    .venv/bin/python bench/renditions_bench.py             # 60 s 1080p30, 3 angles, 20 cuts
    .venv/bin/python bench/renditions_bench.py --seconds 20 --repeat 2

The job: the export_bench edit (cuts spread over the GOP, rotating through three
angles), main output 1080p h264, a 720p h264 rendition and an audio-only m4a, x264
`--preset` (veryfast by default) crf 23, AAC 192 kbit/s.

  together:  one job with `renditions` (one ffmpeg process: decode, cut once, split)
  separate:  a 1080p job, a 720p job, and the m4a as one plain ffmpeg audio encode of
             the same audio (a job cannot be audio only; this is the cheapest way to get it)

Both run in the same process run, alternating, each in a fresh folder; reports wall and
CPU time (ffmpeg children) and the ratios together / separate, and together / its
encoders alone (each output encoded by itself from its finished frames, read raw from
/dev/shm: the floor of any job that must make these outputs; target <= 1.05, issue 18).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from export_bench import (  # noqa: E402
    CACHE,
    RESULTS,
    BenchContext,
    Variant,
    generate,
    job,
    needed_frames_list,
    source_path,
)
from threadcpu import ThreadCpu  # noqa: E402

from spooler.config import Settings  # noqa: E402
from spooler.export import ExportJob, ExportKind  # noqa: E402
from spooler.export.teeout import one_audio_encode  # noqa: E402
from spooler.ffmpeg import find_ffmpeg  # noqa: E402

# ffmpeg CPU is counted as our children's: start it directly, not through the spawn helper.
os.environ["SPOOLER_SPAWN_HELPER"] = "0"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


THREADS = 0  # settings.ffmpeg_threads of the jobs (--threads)


def _run_job(spec: dict[str, Any], work: Path, ffmpeg: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():
        old.unlink()
    settings = Settings(media_roots=[CACHE], spool_dir=CACHE / "spool", ffmpeg_threads=THREADS)
    ExportKind().run(ExportJob.model_validate(spec), BenchContext(work, settings, ffmpeg))


def together(variant: Variant, preset: str, ffmpeg: str) -> bool:
    """Run the job; True if it encoded its sound once for every output (teeout.py)."""
    spec = job(variant, "reencode", preset)
    spec["renditions"] = [
        {"name": "720p", "size": {"mode": "height", "height": 720}, "preset": preset, "crf": 23},
        {"name": "audio", "audioOnly": True},
    ]
    _run_job(spec, CACHE / "work" / "renditions" / "together", ffmpeg)
    return one_audio_encode(ExportJob.model_validate(spec), has_audio=True)


def separate(variant: Variant, preset: str, ffmpeg: str) -> None:
    work = CACHE / "work" / "renditions"
    _run_job(job(variant, "reencode", preset), work / "separate-1080p", ffmpeg)
    spec = job(variant, "reencode", preset)
    spec["output"] = {**spec["output"], "size": {"mode": "height", "height": 720}}
    _run_job(spec, work / "separate-720p", ffmpeg)
    # The job's audio is cam1's own track (offset 0) for the whole timeline.
    subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-t",
         str(variant.seconds), "-i", str(source_path(variant, 1)), "-vn", "-c:a", "aac",
         "-b:a", "192k", "-ar", "48000", "-ac", "2", "-f", "ipod",
         str(work / "separate-audio.m4a")],
        check=True,
    )  # fmt: skip


def encoders_alone(
    variant: Variant, preset: str, ffmpeg: str, shared_sound: bool
) -> list[dict[str, Any]]:
    """Each output of the `together` job encoded by itself from its finished frames: the
    job's outputs decoded once (untimed) to raw frames and raw PCM in /dev/shm, then each
    output's encodes (its video, and its audio if it has any) timed alone, reading those
    with no decoding and no filter. The sum is the floor of a job that must encode them all
    (issue 18: one job <= 1.05x that sum)."""
    work = CACHE / "work" / "renditions" / "together"
    shm = Path("/dev/shm") / "spooler-renditions-bench"
    shm.mkdir(exist_ok=True)
    outputs = sorted(p for p in work.iterdir() if not p.name.startswith("."))
    rows = []
    try:
        for out in outputs:
            video = out.suffix != ".m4a"
            raw = shm / (out.stem + (".yuv" if video else ".pcm"))
            kind = ["-map", "0:v", "-f", "rawvideo", "-pix_fmt", "yuv420p"] if video else [
                "-map", "0:a", "-f", "f32le", "-ac", "2", "-ar", "48000"]  # fmt: skip
            subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                            "-i", str(out), *kind, str(raw)], check=True)  # fmt: skip
            if video:
                import av

                with av.open(str(out)) as c:
                    s = c.streams.video[0]
                    size, rate = f"{s.width}x{s.height}", str(s.average_rate)
                src = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", size, "-r", rate]
                enc = ["-c:v", "libx264", "-preset", preset, "-crf", "23", "-pix_fmt", "yuv420p"]
            else:
                src = ["-f", "f32le", "-ac", "2", "-ar", "48000"]
                enc = ["-c:a", "aac", "-b:a", "192k"]
            cpu, wall = _children_cpu(), time.perf_counter()
            subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                            *src, "-i", str(raw), *enc, "-f", "null", "-"], check=True)  # fmt: skip
            rows.append({"case": f"alone {out.name}", "wall": round(time.perf_counter() - wall, 2),
                         "cpu": round(_children_cpu() - cpu, 2)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            if video and not shared_sound:
                # A video output's own sound is part of its encode too when the job encodes
                # the AAC once per output that has audio; with the sound shared
                # (teeout.py) the job's one AAC encoder is the m4a's, timed above.
                pcm = shm / (out.stem + ".pcm")
                subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                                "-i", str(out), "-map", "0:a", "-f", "f32le", "-ac", "2",
                                "-ar", "48000", str(pcm)], check=True)  # fmt: skip
                cpu, wall = _children_cpu(), time.perf_counter()
                subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                                "-f", "f32le", "-ac", "2", "-ar", "48000", "-i", str(pcm),
                                "-c:a", "aac", "-b:a", "192k", "-f", "null", "-"],
                               check=True)  # fmt: skip
                rows.append({"case": f"alone {out.name} (its audio)",
                             "wall": round(time.perf_counter() - wall, 2),
                             "cpu": round(_children_cpu() - cpu, 2)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                pcm.unlink()
            if video and size == f"{variant.width}x{variant.height}":
                # The job's other work that no encoder does: the 720p scale of the finished
                # frames (same filter, same default flags, as renditions.py plans it)...
                cpu, wall = _children_cpu(), time.perf_counter()
                subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                                *src, "-i", str(raw), "-vf", "scale=1280:720,setsar=1",
                                "-f", "null", "-"], check=True)  # fmt: skip
                rows.append({"case": "scale 720p alone", "extra": True,
                             "wall": round(time.perf_counter() - wall, 2),
                             "cpu": round(_children_cpu() - cpu, 2)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
            raw.unlink()
    finally:
        for leftover in shm.iterdir():
            leftover.unlink()
        shm.rmdir()
    # ...and decoding the frames the edit needs (each segment from its keyframe, as the
    # reencode floor of export_bench.py reads them), the video with the job's decoder
    # threading (slice threads), the sound too.
    listing = work / "needed.ffconcat"
    listing.write_text(needed_frames_list(variant))
    cpu, wall = _children_cpu(), time.perf_counter()
    # (fatal: the null muxer complains of each entry's timestamps, which overlap.)
    subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "fatal",
                    "-thread_type", "slice", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-map", "0:v", "-map", "0:a", "-f", "null", "-"], check=True)  # fmt: skip
    listing.unlink()
    rows.append({"case": "decode needed frames alone", "extra": True,
                 "wall": round(time.perf_counter() - wall, 2),
                 "cpu": round(_children_cpu() - cpu, 2)})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=0, help="the jobs' ffmpeg_threads (0: ffmpeg's choice)"
    )
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    width = args.height * 16 // 9
    cuts = max(1, args.seconds // 3)  # 20 cuts in 60 s, off keyframes (export_bench.job)
    variant = Variant(f"rend{args.height}", args.seconds, width, args.height, cuts=cuts)
    ffmpeg = find_ffmpeg(None)
    generate(ffmpeg, variant)
    rows: list[dict[str, Any]] = []
    shared_sound = False
    for _ in range(args.repeat):
        for name, run in (("together", together), ("separate", separate)):
            cpu, wall = _children_cpu(), time.perf_counter()
            # ffmpeg's CPU by thread (x264's threads take the name of the thread that opens
            # the encoder: fc0, the filter graph's, in ffmpeg 7+).
            with ThreadCpu().running() as sampler:
                result = run(variant, args.preset, ffmpeg)
            if name == "together":
                shared_sound = bool(result)
            rows.append(
                {
                    "case": name,
                    "wall": round(time.perf_counter() - wall, 2),
                    "cpu": round(_children_cpu() - cpu, 2),
                    "cpu_by_thread_name": sampler.by_thread_name(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    rows += encoders_alone(variant, args.preset, ffmpeg, shared_sound)
    n = args.repeat
    load = os.getloadavg()
    for key in ("wall", "cpu"):
        t = sum(r[key] for r in rows if r["case"] == "together") / n
        s = sum(r[key] for r in rows if r["case"] == "separate") / n
        a = sum(r[key] for r in rows if r["case"].startswith("alone"))
        x = sum(r[key] for r in rows if r.get("extra"))
        print(f"{key}: together {t:.1f} s / separate {s:.1f} s = {t / s:.2f}; "
              f"/ its encoders alone {a:.1f} s = {t / a:.2f} (issue 18's target <= 1.05); "
              f"/ encoders + decoding the needed frames + the 720p scale, each alone "
              f"{a + x:.1f} s = {t / (a + x):.2f}")  # fmt: skip
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"renditions_{variant.name}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"variant": variant.__dict__, "preset": args.preset,
                               "threads": args.threads, "load": load, "rows": rows},
                              indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
