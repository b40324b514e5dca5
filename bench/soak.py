"""Soak: the kill loop (with hostile job files mixed in) and the export-job fuzzer, for a
set time, then one line of figures that must hold: nothing lost, nothing run twice.

    .venv/bin/python bench/soak.py --minutes 10

Each kill-loop round uses a fresh spool: two daemons, one SIGKILLed at random moments
while it runs jobs, then `spooler audit`. The fuzzer generates export jobs (valid and
hostile) and runs them through validation and planning, checking every ffmpeg argument.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "export"))

from fuzz_jobs import run_fuzz  # noqa: E402
from kill_loop import run_kill_loop  # noqa: E402


def soak(minutes: float, *, jobs_per_round: int, kills_per_round: int, seed: int) -> dict[str, Any]:
    deadline = time.monotonic() + minutes * 60
    totals: dict[str, Any] = {
        "rounds": 0,
        "jobs_run": 0,
        "kills_survived": 0,
        "bad_job_files": 0,
        "jobs_lost": 0,
        "completed_twice": 0,
        "published_twice": 0,
        "invariant_failures": 0,
        "recovered": 0,
    }
    # Two thirds of the time for the daemons, the rest for the fuzzer.
    daemon_deadline = time.monotonic() + minutes * 60 * 2 / 3
    while time.monotonic() < daemon_deadline:
        with tempfile.TemporaryDirectory(prefix="spooler-soak-") as scratch:
            result = run_kill_loop(
                Path(scratch) / "spool",
                jobs=jobs_per_round,
                kills=kills_per_round,
                seed=seed + totals["rounds"],
                bad_inputs=jobs_per_round // 5,
            )
        totals["rounds"] += 1
        totals["jobs_run"] += result["attempts"]
        totals["kills_survived"] += result["kills"]
        totals["bad_job_files"] += result["bad_inputs"]
        totals["jobs_lost"] += result["lost"]
        totals["completed_twice"] += len(result["completed_twice"])
        totals["published_twice"] += len(result["published_twice"])
        totals["recovered"] += result["recovered"]
        totals["invariant_failures"] += 0 if result["ok"] else 1
        print(
            f"round {totals['rounds']}: {result['text'].splitlines()[0]}; "
            f"kills {result['kills']}; {'OK' if result['ok'] else 'VIOLATED'}",
            flush=True,
        )
    fuzz = run_fuzz(max(10.0, deadline - time.monotonic()))
    totals["fuzz"] = fuzz
    totals["bad_inputs_tried"] = totals["bad_job_files"] + fuzz.get("rejected", 0)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--jobs-per-round", type=int, default=150)
    parser.add_argument("--kills-per-round", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    totals = soak(
        args.minutes,
        jobs_per_round=args.jobs_per_round,
        kills_per_round=args.kills_per_round,
        seed=args.seed,
    )
    print(json.dumps(totals, indent=2))
    fuzz = totals["fuzz"]
    print(
        f"jobs run {totals['jobs_run']}, daemon kills survived {totals['kills_survived']}, "
        f"bad inputs tried {totals['bad_inputs_tried']} ({totals['bad_job_files']} job files "
        f"through daemons, {fuzz.get('rejected', 0)} fuzzed jobs rejected of "
        f"{fuzz.get('examples', 0)}), jobs lost {totals['jobs_lost']}, "
        f"run twice {totals['completed_twice'] + totals['published_twice']}, "
        f"fuzz violations {fuzz.get('violations', 0)}"
    )
    bad = (
        totals["jobs_lost"]
        or totals["completed_twice"]
        or totals["published_twice"]
        or totals["invariant_failures"]
        or fuzz.get("violations", 0)
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
