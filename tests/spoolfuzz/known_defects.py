"""Every defect the fuzzer found, with its minimal reproduction (a regression corpus).

While a defect is open (`fixed=False`) it explains a fuzzed state's defect, but only when
the state holds the entry's trigger and the defect's signature matches one of its patterns,
so a known defect never hides a new one elsewhere; its reproduction runs as
xfail(strict=True). Once the daemon is fixed, that test XPASSes (and fails): set
`fixed=True`, and the reproduction becomes a plain regression test. Numbers match
/work/fuzz-findings.md (FZ-n).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from spool_harness import Outcome
from spool_states import DEAD, GOOD_JOB, TS, Entry, SpoolState


@dataclass(frozen=True)
class Known:
    reason: str
    trigger: Callable[[SpoolState], bool]
    patterns: tuple[str, ...]  # regular expressions over defect signatures
    reproduction: SpoolState
    fixed: bool = False
    in_process: bool = False  # reproduced by the in-process harness (clocks jumped)


def _has(predicate: Callable[[Entry], bool]) -> Callable[[SpoolState], bool]:
    return lambda state: any(predicate(e) for e in state.entries)


def _dead_job(job_id: str, status: dict[str, object], *extra: Entry) -> SpoolState:
    """A job folder a dead worker left: recovery takes it over as soon as the daemon starts."""
    base = (b"jobs", job_id.encode())
    full = {
        "schemaVersion": 1,
        "jobId": job_id,
        "kind": "testpattern",
        "state": "queued",
        "attempt": 1,
        "maxAttempts": 3,
        "submittedAt": TS,
        "updatedAt": TS,
        **status,
    }
    return SpoolState(
        (
            Entry(base, "dir"),
            Entry((*base, b"status.json"), "file", data=json.dumps(full).encode()),
            Entry((*base, b"job.json"), "file", data=json.dumps(GOOD_JOB).encode()),
            Entry((*base, f".owner.{DEAD}".encode()), "file"),
            *extra,
        )
    )


def _status_names_another_job(entry: Entry) -> bool:
    if entry.parts[0] != b"jobs" or entry.parts[-1] != b"status.json" or entry.node != "file":
        return False
    found = re.search(rb'"jobId": "([^"]*)"', entry.data)
    return found is not None and found.group(1) != entry.parts[1]


def _not_utf8(entry: Entry) -> bool:
    try:
        b"/".join(entry.parts).decode()
    except UnicodeDecodeError:
        return True
    return False


KNOWN: dict[str, Known] = {
    "FZ-1 status jobId is a path": Known(
        "fuzz-findings FZ-1: recovery writes the status to jobs/<status.jobId>/, here outside "
        "the spool",
        _has(_status_names_another_job),
        (r"^canary:", r"^log:job_recovery_failed:", r"^log:loop_phase_failed:recover"),
        _dead_job("j1", {"jobId": "../../canary/tree"}),
        fixed=True,  # main 092c446
    ),
    "FZ-2 hard-linked job.log": Known(
        "fuzz-findings FZ-2: open_log_for_append accepts a hard link and writes outside the spool",
        _has(lambda e: e.node == "hardlink" and e.parts[-1] == b"job.log"),
        (r"^canary:(IN_MODIFY|IN_CLOSE_WRITE|CONTENT_CHANGED):linked/",),
        _dead_job(
            "j1",
            {"state": "running"},
            Entry((b"jobs", b"j1", b"job.log"), "hardlink", target="linked/log.txt"),
        ),
        fixed=True,  # main 092c446
    ),
    "FZ-4 rmtree opens a FIFO or a link": Known(
        "fuzz-findings FZ-4: shutil.rmtree opens its argument first: a FIFO left as a stale "
        "staging folder (or in trash/) blocks the loop forever; a symlink's target is opened",
        _has(
            lambda e: (
                len(e.parts) == 2
                and e.node in ("fifo", "symlink")
                and (e.parts[0] == b"trash" or e.parts[:2] == (b"jobs", e.parts[1]))
            )
        ),
        (
            r"^good_job_not_done:",
            r"^inbox_entry_stuck:",
            r"^claim_not_recovered:",
            r"^heartbeat_stale$",
            r"^daemon_did_not_stop$",
            r"^canary:IN_OPEN:tree",
        ),
        SpoolState((Entry((b"jobs", b".tmp-j1.0badc0de"), "fifo", age=3600.0),)),
        fixed=True,  # main 092c446
    ),
    "FZ-5 retention stops at a folder named *.error.json": Known(
        "fuzz-findings FZ-5: retention unlinks an expired rejected/*.error.json that is a "
        "folder: IsADirectoryError aborts every retention pass (trash never emptied)",
        _has(
            lambda e: (
                e.parts[0] == b"rejected"
                and e.parts[-1].endswith(b".error.json")
                and e.node == "dir"
            )
        ),
        (r"^log:loop_phase_failed:run:IsADirectoryError",),
        SpoolState((Entry((b"rejected", b"x.error.json"), "dir"),)),
        in_process=True,
        fixed=True,  # main e74904a
    ),
    "FZ-6 a deep folder stops removals": Known(
        "fuzz-findings FZ-6: shutil.rmtree recurses once per level: folders nested 1,200 deep "
        "(in trash/, a job folder or rejected/) raise RecursionError in every retention pass",
        _has(lambda e: e.node == "deep" and e.size >= 1000),
        # The failed removal (1,000 frames deep, then the traceback logged) is also one slow
        # turn: 0.5 s on an idle 2-core VM, 3.8 s under a load of 20.
        (r"RecursionError", r"^heartbeat_stale$"),
        SpoolState((Entry((b"trash", b"t"), "deep", size=1200),)),
        in_process=True,
        fixed=True,  # main e74904a: no RecursionError; its slow removal is FZ-9
    ),
    "FZ-7 strays starve the claim": Known(
        "fuzz-findings FZ-7: a pass moves strays aside until its time budget is spent and "
        "only then claims: 3,000 stray files delay a good job by tens of seconds",
        _has(lambda e: e.node == "many" and e.parts[0] == b"inbox" and e.size >= 1000),
        (
            r"^good_job_not_done:still in inbox/",
            r"^inbox_entry_stuck:stray:",
            r"^inbox_entry_stuck:job:file",
            r"^rejected_without_error_file$",
        ),
        SpoolState((Entry((b"inbox", b"stray"), "many", size=3000),)),
        in_process=True,
        fixed=True,  # main e74904a
    ),
    "FZ-8 recovery and retention passes have no budget": Known(
        "fuzz-findings FZ-8: quarantining junk in claims/ (and retention of rejected/) runs "
        "without a time budget in the loop thread: 3,000 junk claims block a turn for > 5 s",
        _has(
            lambda e: (
                e.node == "many"
                and (
                    (e.parts[0] == b"claims" and e.size >= 300)
                    or (e.parts[0] == b"rejected" and e.size >= 3000)
                )
            )
        ),
        (
            r"^heartbeat_stale$",
            r"^good_job_not_done:still in inbox/",
            r"^inbox_entry_stuck:job:file",
            r"^daemon_did_not_stop$",
        ),
        SpoolState((Entry((b"claims", b"x"), "many", size=3000),)),
        in_process=True,
        fixed=True,  # main e74904a
    ),
    "FZ-9 deep-tree removal is quadratic and unbudgeted": Known(
        "fuzz-findings FZ-9: _remove_deep_tree scans each level by its full path (work "
        "quadratic in the depth, ENAMETOOLONG past PATH_MAX) in one unbudgeted turn: 3,000 "
        "levels in trash/ block the loop > 5 s and are never removed",
        _has(lambda e: e.node == "deep" and e.size >= 1000),
        (
            r"^heartbeat_stale$",
            r"^good_job_not_done:",
            r"^inbox_entry_stuck:job:file",
            r"^daemon_did_not_stop$",
        ),
        SpoolState((Entry((b"trash", b"t"), "deep", size=3000),)),
        in_process=True,
        fixed=True,  # removal through directory descriptors within the pass budget
    ),
    "FZ-3 audit prints undecodable names": Known(
        "fuzz-findings FZ-3: `spooler audit` raises UnicodeEncodeError on a non-UTF-8 name",
        _has(_not_utf8),
        (r"^cli:audit:UnicodeEncodeError",),
        SpoolState((Entry((b"jobs", b"\xff\xfe"), "symlink", target="canary:tree/dir"),)),
        fixed=True,  # main 092c446
    ),
}


def unexplained(outcome: Outcome) -> list[str]:
    """The outcome's defect signatures that no known defect (triggered by its state) explains."""
    active = [k for k in KNOWN.values() if not k.fixed and k.trigger(outcome.state)]
    return sorted(
        d.signature
        for d in outcome.defects
        if not any(re.search(p, d.signature) for k in active for p in k.patterns)
    )
