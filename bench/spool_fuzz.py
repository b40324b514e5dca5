"""Spool-state fuzzer, long mode: hostile spool states against a real daemon for a set time.

    .venv/bin/python bench/spool_fuzz.py --minutes 10
    .venv/bin/python bench/spool_fuzz.py --replay bench/results/spool_fuzz/F01.json

Each state (tests/spoolfuzz/spool_states.py) runs on a fresh spool with a fresh canary tree
and a real `spooler run` (tests/spoolfuzz/spool_harness.py lists the checks). A defect
signature seen for the first time is confirmed by a second run and its state shrunk, entry
by entry, to a minimal reproduction. Output: a summary on stdout; every finding as markdown
(`bench/results/spool_fuzz.md`, and appended to `--findings FILE` if given) and as JSON with
each minimal state (`bench/results/spool_fuzz/F<n>.json`, replayable with `--replay`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "spoolfuzz"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from spool_harness import Defect, Outcome, cleanup, run_state  # noqa: E402
from spool_states import (  # noqa: E402
    SpoolState,
    spool_states,
    state_from_json,
    state_to_json,
)

RESULTS = HERE / "results"


class TimeUp(BaseException):
    """Not an Exception: hypothesis lets it through instead of shrinking it."""


@dataclass
class Finding:
    number: int
    signature: str
    mode: str  # "process" or "in-process": where it was found, shrunk and replayed
    detail: str
    seen: int = 1
    confirmed: bool = False
    state: SpoolState | None = None
    also: list[str] = field(default_factory=list)  # other signatures of the minimal state


@dataclass
class Fuzzer:
    workdir: Path
    good_timeout: float
    dwell: float
    minimize_seconds: float
    on_finding: Any = None  # called after each new finding (the report is kept current)
    tried: int = 0
    runs: int = 0
    harness_errors: int = 0
    findings: dict[str, Finding] = field(default_factory=dict)
    explained: dict[str, int] = field(default_factory=dict)  # signature -> finding number

    def run(self, state: SpoolState, mode: str) -> Outcome:
        self.runs += 1
        work = Path(tempfile.mkdtemp(prefix="state-", dir=self.workdir))
        try:
            return run_mode(state, work / "w", mode, self.good_timeout, self.dwell)
        finally:
            cleanup(work)

    def explore(self, state: SpoolState, modes: list[str]) -> None:
        self.tried += 1
        for mode in modes:
            self._explore(state, mode)

    def _explore(self, state: SpoolState, mode: str) -> None:
        try:
            outcome = self.run(state, mode)
        except Exception as exc:  # the harness, not the daemon (say, no inotify instance)
            self.harness_errors += 1
            print(f"harness error ({mode}), state skipped: {exc!r}", flush=True)
            time.sleep(1.0)
            return
        first_detail: dict[str, str] = {}
        for d in outcome.defects:
            first_detail.setdefault(d.signature, d.detail)
        for signature, detail in first_detail.items():  # once per signature and state
            defect = Defect(signature, detail)
            number = self.explained.get(defect.signature)
            if number is not None:
                self._finding(number).seen += 1
                continue
            finding = Finding(len(self.findings) + 1, defect.signature, mode, defect.detail)
            self.findings[defect.signature] = finding
            self.explained[defect.signature] = finding.number
            self._confirm_and_shrink(finding, state)
            print(
                f"  F{finding.number:02d} {finding.signature}"
                f" ({'confirmed' if finding.confirmed else 'seen once'},"
                f" {len(finding.state.entries) if finding.state else '?'} entries)",
                flush=True,
            )
            if self.on_finding is not None:
                self.on_finding()
        print(
            f"{self.tried} states, {len(self.findings)} signatures, {mode} "
            f"{outcome.seconds:.1f} s: {sorted(outcome.signatures) or 'ok'}",
            flush=True,
        )

    def _finding(self, number: int) -> Finding:
        return next(f for f in self.findings.values() if f.number == number)

    def _confirm_and_shrink(self, finding: Finding, state: SpoolState) -> None:
        first = self.run(state, finding.mode)
        finding.confirmed = finding.signature in first.signatures
        finding.state = state
        if not finding.confirmed:
            return
        deadline = time.monotonic() + self.minimize_seconds
        entries = list(state.entries)
        last = first
        changed = True
        while changed and time.monotonic() < deadline:
            changed = False
            for i in range(len(entries)):
                if time.monotonic() >= deadline:
                    break
                candidate = SpoolState(tuple(entries[:i] + entries[i + 1 :]), state.settings)
                if not candidate.entries:
                    continue
                result = self.run(candidate, finding.mode)
                if finding.signature in result.signatures:
                    entries, last, changed = list(candidate.entries), result, True
                    break
        finding.state = SpoolState(tuple(entries), state.settings)
        finding.detail = next(
            (d.detail for d in last.defects if d.signature == finding.signature), finding.detail
        )
        finding.also = sorted(last.signatures - {finding.signature})
        # What the minimal state shows in two runs is explained by this finding; a one-off
        # (another process listing the canary, say) stays eligible for a finding of its own.
        for signature in last.signatures & first.signatures:
            self.explained.setdefault(signature, finding.number)


def markdown(fuzzer: Fuzzer, minutes: float, head: str) -> str:
    lines = [
        f"## Spool-state fuzzer: {head}",
        "",
        f"{fuzzer.tried} hostile states tried in {minutes:.1f} min ({fuzzer.runs} daemon runs"
        f" with confirmations and shrinking); {len(fuzzer.findings)} distinct defect "
        "signatures.",
        "",
    ]
    for finding in sorted(fuzzer.findings.values(), key=lambda f: f.number):
        lines += [
            f"### F{finding.number:02d} `{finding.signature}`",
            "",
            f"Seen {finding.seen} time(s), found {finding.mode}; "
            + ("reproduces on a second run." if finding.confirmed else "**did not reproduce**."),
        ]
        if finding.also:
            lines.append(
                f"Same minimal state also shows: {', '.join(f'`{s}`' for s in finding.also)}."
            )
        lines += ["", "Minimal state (on a fresh spool; `canary` is a tree beside the spool):", ""]
        assert finding.state is not None
        lines += [finding.state.describe(), "", "Detail:", "", "```text"]
        lines += [finding.detail.strip()[:1500], "```", ""]
        lines.append(
            f"Replay: `.venv/bin/python bench/spool_fuzz.py --replay "
            f"bench/results/spool_fuzz/F{finding.number:02d}.json`"
        )
        lines.append("")
    return "\n".join(lines)


def save(fuzzer: Fuzzer, minutes: float, args: argparse.Namespace, append: bool = True) -> None:
    out = RESULTS / "spool_fuzz"
    out.mkdir(parents=True, exist_ok=True)
    for finding in fuzzer.findings.values():
        assert finding.state is not None
        (out / f"F{finding.number:02d}.json").write_text(
            json.dumps(
                {
                    "signature": finding.signature,
                    "mode": finding.mode,
                    "confirmed": finding.confirmed,
                    "also": finding.also,
                    "state": state_to_json(finding.state),
                },
                indent=1,
            )
        )
    head = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f", seed {args.seed}"
    text = markdown(fuzzer, minutes, head)
    (RESULTS / "spool_fuzz.md").write_text(text)
    summary: dict[str, Any] = {
        "states": fuzzer.tried,
        "mode": args.mode,
        "runs": fuzzer.runs,
        "minutes": round(minutes, 2),
        "seed": args.seed,
        "signatures": {f.signature: f.seen for f in fuzzer.findings.values()},
        "findings": len(fuzzer.findings),
        "harness_errors": fuzzer.harness_errors,
    }
    (RESULTS / "spool_fuzz.json").write_text(json.dumps(summary, indent=1))
    if args.findings and append:
        with Path(args.findings).open("a", encoding="utf-8") as fh:
            fh.write("\n" + text + "\n")


def run_mode(
    state: SpoolState, work: Path, mode: str, good_timeout: float, dwell: float
) -> Outcome:
    if mode == "in-process":
        # Imported here: `--mode process` also runs against daemons without Daemon.step.
        from inprocess_harness import run_state_in_process

        return run_state_in_process(state, work, good_timeout=good_timeout)
    return run_state(state, work, good_timeout=good_timeout, dwell=dwell)


def replay(path: Path, args: argparse.Namespace) -> int:
    saved = json.loads(path.read_text())
    state = state_from_json(saved["state"])
    mode = saved.get("mode", "process") if args.mode == "both" else args.mode
    print(f"{mode}:\n{state.describe()}")
    tmp = Path(tempfile.mkdtemp(prefix="spool-fuzz-"))
    try:
        outcome = run_mode(state, tmp / "w", mode, args.good_timeout, args.dwell)
        print(f"\n{outcome.seconds:.1f} s; skipped: {outcome.skipped or 'none'}")
        for defect in outcome.defects:
            print(f"- {defect.signature}\n  {defect.detail[:600]}")
        if args.keep:
            print(outcome.log_tail)
    finally:
        cleanup(tmp)
    return 1 if outcome.defects else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--max-features", type=int, default=5)
    parser.add_argument("--good-timeout", type=float, default=6.0)
    parser.add_argument(
        "--dwell",
        type=float,
        default=0.0,
        help="seconds to keep each daemon running longer (6 lets the first retention pass run)",
    )
    parser.add_argument("--minimize-seconds", type=float, default=120.0)
    parser.add_argument(
        "--mode",
        choices=["both", "in-process", "process"],
        default="both",
        help="in-process: the loop stepped with jumping clocks (fast); process: a real "
        "`spooler run` per state (start-up, signals, the CLI); both (default): each state "
        "in process, then in a process",
    )
    parser.add_argument("--findings", help="append the markdown report to this file")
    parser.add_argument("--replay", type=Path, help="run one saved state and print its defects")
    parser.add_argument("--keep", action="store_true", help="with --replay: print the log")
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay, args)
    # SIGTERM (timeout, kill) ends the run like Ctrl-C: the report is still written.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    modes = ["in-process", "process"] if args.mode == "both" else [args.mode]
    tmp = Path(tempfile.mkdtemp(prefix="spool-fuzz-"))
    try:
        fuzzer = Fuzzer(tmp, args.good_timeout, args.dwell, args.minimize_seconds)
        # Keep the report current, without appending to --findings before the end.
        fuzzer.on_finding = lambda: save(
            fuzzer, (time.monotonic() - started) / 60, args, append=False
        )

        @seed(args.seed)
        @settings(
            database=None,
            deadline=None,
            max_examples=100_000,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(spool_states(max_features=args.max_features))
        def explore(state: SpoolState) -> None:
            if time.monotonic() >= deadline:
                raise TimeUp
            fuzzer.explore(state, modes)

        with contextlib.suppress(TimeUp, KeyboardInterrupt):
            explore()
        minutes = (time.monotonic() - started) / 60
        save(fuzzer, minutes, args)
    finally:
        cleanup(tmp)  # not TemporaryDirectory: states may hold folders 1,200 deep
    print(
        f"\n{fuzzer.tried} states tried, {len(fuzzer.findings)} distinct defect signatures "
        f"({sum(f.confirmed for f in fuzzer.findings.values())} confirmed); report in "
        f"{RESULTS / 'spool_fuzz.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
