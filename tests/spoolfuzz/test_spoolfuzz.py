"""Spool-state fuzzer, bounded for CI (issue 11, "the class, not just the cases").

`test_hostile_spool_states` runs a fixed, derandomized set of hostile spool states
(spool_states.py), each on a fresh spool against a real daemon (spool_harness.py has the
checks: a good job succeeds within seconds, the heartbeat stays fresh, nothing outside the
spool is touched, the CLI answers). A defect fails it unless it is a known one
(known_defects.py), i.e. the state holds the known trigger and the signature is one that
defect causes; each known finding also has its minimal reproduction below:
xfail(strict=True) while open, a plain regression test once fixed (known_defects.py says
how). `bench/spool_fuzz.py --minutes N` is the long mode.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from inprocess_harness import run_state_in_process
from known_defects import KNOWN, unexplained
from spool_harness import Outcome, cleanup, run_state
from spool_states import SpoolState, spool_states

CI_STATES = 24  # about 1.5 s each on an idle 2-core machine
CI_BUDGET_SECONDS = 35.0  # a loaded machine runs fewer states rather than a longer test
CI_STATES_IN_PROCESS = 30  # about 0.7 s each (two good jobs, clocks jumped by 30 days)
CI_BUDGET_IN_PROCESS = 20.0
_clock: dict[str, float] = {}


def _over_budget(key: str, budget: float) -> bool:
    started = _clock.setdefault(key, time.monotonic())
    return time.monotonic() - started > budget


def _trace(key: str, outcome: Outcome) -> None:
    """Shown with -s, or for a failing run: how far the budget went."""
    _clock[key + "-states"] = _clock.get(key + "-states", 0) + 1
    n = _clock[key + "-states"]
    print(f"{key} state {n:.0f}: {outcome.seconds:.1f} s {sorted(outcome.signatures)}")


def report(outcome: Outcome, defects: list[str]) -> str:
    first: dict[str, str] = {}
    for d in outcome.defects:
        first.setdefault(d.signature, d.detail[:800])
    return (
        f"defects: {defects}\n\nstate:\n{outcome.state.describe()}\n\n"
        f"skipped entries: {outcome.skipped[:10]}\n\n"
        + "\n".join(f"{sig}\n  {detail}" for sig, detail in first.items())
        + f"\n\ndaemon log (tail):\n{outcome.log_tail}"
    )


@pytest.mark.slow
@pytest.mark.timeout(CI_BUDGET_SECONDS + 60)
@settings(
    max_examples=CI_STATES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking here: the bench shrinks
    suppress_health_check=list(HealthCheck),
)
@given(state=spool_states(max_features=4))
def test_hostile_spool_states(state: SpoolState) -> None:
    """Real `spooler run` processes: start-up and restart paths, signals, the CLI."""
    if _over_budget("process", CI_BUDGET_SECONDS):
        return
    work = Path(tempfile.mkdtemp(prefix="spoolfuzz-"))
    try:
        outcome = run_state(state, work / "w", good_timeout=6.0, cli_timeout=5.0)
    finally:
        cleanup(work)
    _trace("process", outcome)
    new = unexplained(outcome)
    assert not new, report(outcome, new)


@pytest.mark.slow
@pytest.mark.timeout(CI_BUDGET_IN_PROCESS + 60)
@settings(
    max_examples=CI_STATES_IN_PROCESS,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(state=spool_states(max_features=5))
def test_hostile_spool_states_in_process(state: SpoolState) -> None:
    """The loop stepped in process with jumping clocks: leases, retention, stale staging."""
    if _over_budget("in-process", CI_BUDGET_IN_PROCESS):
        return
    work = Path(tempfile.mkdtemp(prefix="spoolfuzz-"))
    try:
        outcome = run_state_in_process(state, work / "w", good_timeout=6.0)
    finally:
        cleanup(work)
    _trace("in-process", outcome)
    new = unexplained(outcome)
    assert not new, report(outcome, new)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=()
            if known.fixed
            else pytest.mark.xfail(strict=True, raises=AssertionError, reason=known.reason),
        )
        for name, known in KNOWN.items()
    ],
)
def test_fuzzer_finding_reproduction(name: str) -> None:
    """Each finding's minimal state: a regression test once fixed, a strict xfail before."""
    known = KNOWN[name]
    work = Path(tempfile.mkdtemp(prefix="spoolfuzz-"))  # not tmp_path: see cleanup()
    try:
        if known.in_process:
            outcome = run_state_in_process(known.reproduction, work / "w", good_timeout=4.0)
        else:
            outcome = run_state(known.reproduction, work / "w", good_timeout=4.0, cli_timeout=3.0)
    finally:
        cleanup(work)
    signatures = sorted(outcome.signatures)
    if known.fixed:
        # Only this finding is under test: what an open finding triggered by the same
        # state explains (FZ-9's slow removal of FZ-6's deep tree, say) is its own test.
        signatures = unexplained(outcome)
    else:
        # Only this defect may make the reproduction fail as expected; anything else is an
        # error (not an AssertionError, so xfail does not swallow it).
        others = [s for s in signatures if not any(re.search(p, s) for p in known.patterns)]
        if others:
            raise RuntimeError(report(outcome, others))
    assert not signatures, report(outcome, signatures)
