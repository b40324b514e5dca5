"""Benchmark of the ingest kinds: three ratios in one run (docs/ingest.md).

    .venv/bin/python bench/ingest_bench.py                 # 600 s 1080p30 source, 3 x 600 s angles
    .venv/bin/python bench/ingest_bench.py --seconds 60 --repeat 2
    .venv/bin/python bench/ingest_bench.py --only sync --repeat 3

  proxy     the `proxy` job (no waveform, no poster: probe, scan, content key, encode,
            verify, manifest) / ONE plain ffmpeg command with the same encoder settings
            (target <= 1.05)
  waveform  the `proxy` job with its waveform (a second output of the same pass, peaks in
            numpy) / the same job without (target <= 1.05)
  sync      a `sync` job of three angles / ONE ffmpeg decode of the same three audio
            tracks to nowhere (target <= 1.5)

Wall time and CPU time (this process plus its children); each pair alternates.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from export_bench import CACHE, BenchContext, Variant, generate  # noqa: E402

from spooler.config import Settings  # noqa: E402
from spooler.ffmpeg import find_ffmpeg  # noqa: E402
from spooler.ingest import proxyplan  # noqa: E402
from spooler.ingest.models import ProxyJob, SyncJob  # noqa: E402
from spooler.ingest.proxy import ProxyKind  # noqa: E402
from spooler.ingest.sync import SyncKind  # noqa: E402
from spooler.media import probe, scan_video  # noqa: E402


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(run: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    run()
    return time.perf_counter() - wall, _cpu() - cpu


def scene_angles(ffmpeg: str, seconds: int) -> list[Path]:
    """Three recorders of one scene (noise bursts, tones), different starts and filters."""
    out = []
    expr = (
        "0.6*lt(mod(t*1.7+sin(t*0.37)*3,1.0),0.06)*random(1)"
        "+0.2*sin(2*PI*(300+200*sin(t*0.5))*t)*lt(mod(t,2.3),0.4)"
    )
    for i, chain in enumerate(("anull", "highpass=f=300,lowpass=f=3000", "aecho=0.8:0.5:35:0.4")):
        path = CACHE / f"ingest_scene_{seconds}s_{i}.m4a"
        out.append(path)
        if path.exists():
            continue
        tmp = path.with_suffix(".part.m4a")
        subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"aevalsrc='{expr}':s=48000:d={seconds + 3 * i + 1}", "-af",
             f"atrim=start={1.5 * i},asetpts=N/SR/TB,{chain}", "-c:a", "aac", "-b:a", "128k",
             str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", choices=["proxy", "waveform", "sync"], action="append")
    args = parser.parse_args()
    ffmpeg = find_ffmpeg(None)
    needs_video = not args.only or {"proxy", "waveform"} & set(args.only)
    generated = generate(ffmpeg, Variant("ingest", args.seconds, 1920, 1080)) if needs_video else []
    source = generated[0] if generated else CACHE
    angles = scene_angles(ffmpeg, args.seconds)
    work = CACHE / "work" / "ingest"
    derived = work / "derived"
    derived.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        media_roots=[CACHE], spool_dir=work / "spool", ingest={"derived_root": derived}
    )

    def job_dir() -> Path:
        folder = work / f"job-{time.monotonic_ns()}"
        folder.mkdir()
        return folder

    def proxy(waveform: bool) -> None:
        spec = ProxyJob.model_validate(
            {"kind": "proxy", "source": source.name, "poster": False,
             **({} if waveform else {"waveform": None})}
        )  # fmt: skip
        ProxyKind().run(spec, BenchContext(job_dir(), settings, ffmpeg))

    def plain() -> None:
        info, index = probe(source, decode=True), scan_video(source)
        plan = proxyplan.plan_proxy(
            ProxyJob.model_validate({"kind": "proxy", "source": source.name}), info, index,
            settings.ingest, source=str(source), output=str(work / "plain.mp4"), pcm=None,
            timecode=None, threads=[],
        )  # fmt: skip
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *plan.args],
                       check=True)  # fmt: skip

    def sync() -> None:
        spec = SyncJob.model_validate(
            {"kind": "sync", "angles": [{"id": f"a{i}", "source": p.name}
                                        for i, p in enumerate(angles)]}
        )  # fmt: skip
        ctx = BenchContext(job_dir(), settings, ffmpeg)
        SyncKind().run(spec, ctx)
        result = json.loads((ctx.job_dir / "sync.json").read_text())
        placed = [a["syncOffset"] for a in result["angles"]]
        assert all(p is not None for p in placed), result  # the bench must place them

    def decode() -> None:
        inputs = [x for p in angles for x in ("-i", str(p))]
        maps = [x for i in range(len(angles)) for x in ("-map", f"{i}:a")]
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", *inputs, *maps,
                        "-f", "null", "-"], check=True)  # fmt: skip

    pairs = {
        "proxy": (lambda: proxy(False), plain, 1.05),
        "waveform": (lambda: proxy(True), lambda: proxy(False), 1.05),
        "sync": (sync, decode, 1.5),
    }
    report: dict[str, Any] = {"seconds": args.seconds}
    for name, (ours, base, target) in pairs.items():
        if args.only and name not in args.only:
            continue
        ours_t, base_t = [], []
        for _ in range(args.repeat):
            ours_t.append(timed(ours))
            base_t.append(timed(base))
        wall = min(w for w, _ in ours_t) / min(w for w, _ in base_t)
        cpu = min(c for _, c in ours_t) / min(c for _, c in base_t)
        report[name] = {
            "ours_wall": round(min(w for w, _ in ours_t), 2),
            "base_wall": round(min(w for w, _ in base_t), 2),
            "wall_ratio": round(wall, 3), "cpu_ratio": round(cpu, 3), "target": target,
        }  # fmt: skip
        print(name, report[name], flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
