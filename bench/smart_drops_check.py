"""Check smart render's dropped packets on the heavy sources: no frame may change.

    .venv/bin/python bench/smart_drops_check.py              # the 5-minute heavy shape
    .venv/bin/python bench/smart_drops_check.py --minutes 2

Plans the export_bench heavy job in `smart` mode twice, with the warm-up's non-reference
pictures dropped (as the daemon runs it) and without, runs each encode command's decoders
and filter graph up to the encoder's input (`-f framemd5`), and compares every frame's
hash. tests/export/test_smart.py does the same on the tests' small clips; this runs it on
1080p ~16 Mbit/s footage with 2 B-frames (issue 18).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import export_bench as eb  # noqa: E402

from spooler.config import Settings  # noqa: E402
from spooler.export import ExportJob  # noqa: E402
from spooler.export.commands import Command, PlanPaths  # noqa: E402
from spooler.export.plan import plan_export  # noqa: E402
from spooler.export.sources import (  # noqa: E402
    close_sources,
    inspect_sources,
    non_reference_packets,
)
from spooler.export.timeline import job_pieces  # noqa: E402
from spooler.ffmpeg import find_ffmpeg  # noqa: E402


def decoded(ffmpeg: str, command: Command, fds: list[int]) -> list[str]:
    """The hash of every frame the command's encoder would get."""
    for path, text in command.files.items():
        path.write_text(text)
    graph = command.args[: command.args.index("-map")]  # the inputs and the filter graph
    out = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *graph, "-map", "[vout]",
         "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True, pass_fds=fds,
    ).stdout  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line[0] != "#"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=5)
    args = parser.parse_args()
    ffmpeg = find_ffmpeg(None)
    variant = eb.heavy_minutes(args.minutes)
    eb.generate(ffmpeg, variant)
    spec = ExportJob.model_validate(eb.job(variant, "smart", "veryfast"))
    work = eb.CACHE / "work" / "smart-drops"
    work.mkdir(parents=True, exist_ok=True)
    used = set(dict.fromkeys(p.angle for p in job_pieces(spec)))
    sources = inspect_sources(spec, [eb.CACHE], used)
    same = True
    try:
        settings = Settings(media_roots=[eb.CACHE], spool_dir=work / "spool")
        lists = tuple(work / f"{i}.ffconcat" for i in range(3 * (len(spec.angles) + 2)))
        paths = PlanPaths(work / "o.mp4", work / "a.mp4", work / "g.txt", lists, ())
        dropping = plan_export(spec, sources, settings, paths, non_reference_packets)
        plain = plan_export(spec, sources, settings, paths)
        fds = [s.fd for s in sources.values() if s.fd is not None]
        for a, b in zip(dropping.commands, plain.commands, strict=True):
            if not a.step.startswith("encode"):
                continue
            named = sum(arg.count("eq(pos") for arg in a.args if arg.startswith("noise="))
            got, want = decoded(ffmpeg, a, fds), decoded(ffmpeg, b, fds)
            same = same and got == want
            print(f"{a.step}: {named} packets named, {len(got)} frames, "
                  f"{'identical' if got == want else 'DIFFERENT'}")  # fmt: skip
    finally:
        close_sources(sources)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
