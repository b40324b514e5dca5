"""Hostile spool states: a plain description (data), the hypothesis strategies that build
them, and `materialize`, which writes one onto disk.

A state is a tuple of `Entry`s: one node each (file, folder, FIFO, symlink, hard link,
sparse file) at a path of raw bytes under the spool root, made before the daemon starts
(a restart finds it) or while it runs (`live`). Symlinks and hard links point into the
canary tree (canary.py), and paths inside status files climb to it, so that any access
outside the spool shows up there.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

# A worker that is dead: no heartbeat, and a pid above any pid_max.
DEAD = "ghost-4999999-dead00"
# A worker with a heartbeat written by the fuzzer (fresh mtime, then never again).
FAKE = "fake-4999998-fa4e00"
GOOD_JOB: dict[str, Any] = {
    "kind": "testpattern",
    "durationSeconds": 0.2,
    "width": 32,
    "height": 32,
    "fps": 10,
}
TS = "2026-11-30T07:00:00Z"
OLD_TS = "2000-01-01T00:00:00Z"  # past every retention


@dataclass(frozen=True)
class Entry:
    parts: tuple[bytes, ...]  # path under the spool root, e.g. (b"jobs", b"j1", b"status.json")
    node: str  # file | dir | fifo | symlink | hardlink | sparse | many | deep
    data: bytes = b""  # file content
    target: str = ""  # symlink: "canary:<name>" or a literal; hardlink: a canary name
    size: int = 0  # sparse: file size; many: number of files; deep: folder depth
    age: float = 0.0  # seconds to set the mtime back (stale staging, old rejected files)
    live: bool = False  # made after the daemon started

    def describe(self) -> str:
        path = b"/".join(self.parts)
        what = self.node
        if self.node == "file":
            shown = self.data if len(self.data) <= 300 else self.data[:300] + b"..."
            what = f"file {shown!r}" + (
                f" ({len(self.data)} bytes)" if len(self.data) > 300 else ""
            )
        elif self.node in ("symlink", "hardlink"):
            what = f"{self.node} -> {self.target}"
        elif self.node == "sparse":
            what = f"sparse file of {self.size} bytes"
        elif self.node == "many":
            what = f"{self.size} empty files named {self.parts[-1]!r}0, 1, ..."
        elif self.node == "deep":
            what = f"folders nested {self.size} deep (a/a/a/...)"
        extra = (f", mtime {self.age:.0f} s ago" if self.age else "") + (
            ", made while the daemon runs" if self.live else ""
        )
        return f"`{path!r}`: {what}{extra}"


@dataclass(frozen=True)
class DaemonSettings:
    heartbeat: float = 0.5
    lease: float = 3.0
    max_jobs: int = 2

    def env(self) -> dict[str, str]:
        return {
            "SPOOLER_HEARTBEAT_SECONDS": str(self.heartbeat),
            "SPOOLER_LEASE_SECONDS": str(self.lease),
            "SPOOLER_MAX_JOBS": str(self.max_jobs),
        }


@dataclass(frozen=True)
class SpoolState:
    entries: tuple[Entry, ...]
    settings: DaemonSettings = field(default_factory=DaemonSettings)

    def describe(self) -> str:
        head = (
            f"daemon heartbeat {self.settings.heartbeat} s, lease {self.settings.lease} s, "
            f"max_jobs {self.settings.max_jobs}"
        )
        return "\n".join([head, *(f"- {e.describe()}" for e in self.entries)])

    def job_ids(self) -> list[str]:
        """Valid ids the state puts in jobs/ (the CLI's `status` is asked about them)."""
        ids = set()
        for e in self.entries:
            if len(e.parts) >= 2 and e.parts[0] == b"jobs":
                name = e.parts[1].decode(errors="replace")
                if name.isascii() and name.replace("-", "").replace("_", "").isalnum():
                    ids.add(name)
        return sorted(ids)


# -- materialize --------------------------------------------------------------------------
def materialize(entries: tuple[Entry, ...], spool: Path, canary: Path) -> list[str]:
    """Write the entries; an entry whose place is taken (say, a file where its folder
    should be, or a second entry at one path) is skipped and reported, since the state is
    still hostile without it. Never follows a symlink: the harness itself must not write
    into the canary through one."""
    skipped = []
    root = os.fsencode(spool)
    for entry in entries:
        path = os.path.join(root, *entry.parts)
        try:
            _real_parents(root, entry.parts)
            _make(entry, path, canary)
            if entry.age:
                moment = time.time() - entry.age
                os.utime(path, (moment, moment), follow_symlinks=False)
        except OSError as exc:
            skipped.append(f"{entry.describe()}: {exc.strerror}")
    return skipped


def _real_parents(root: bytes, parts: tuple[bytes, ...]) -> None:
    """Create the entry's parent folders; refuse a parent that is a symlink or a file."""
    os.makedirs(root, exist_ok=True)
    path = root
    for part in parts[:-1]:
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            os.mkdir(path)
            continue
        if not stat.S_ISDIR(mode):
            raise OSError(errno.ENOTDIR, "a parent is not a real folder")


def _make(entry: Entry, path: bytes, canary: Path) -> None:
    if entry.node in ("file", "sparse"):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o664)
        try:
            if entry.node == "sparse":
                os.ftruncate(fd, entry.size)
            else:
                os.write(fd, entry.data)
        finally:
            os.close(fd)
    elif entry.node == "dir":
        if not (os.path.lexists(path) and stat.S_ISDIR(os.lstat(path).st_mode)):
            os.mkdir(path)
    elif entry.node == "fifo":
        os.mkfifo(path)
    elif entry.node == "symlink":
        target = entry.target
        if target.startswith("canary:"):
            target = str(canary / target.removeprefix("canary:"))
        os.symlink(target, path)
    elif entry.node == "hardlink":
        os.link(canary / entry.target, path, follow_symlinks=False)
    elif entry.node == "many":
        for i in range(entry.size):
            os.close(os.open(path + str(i).encode(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664))
    elif entry.node == "deep":
        os.mkdir(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(entry.size):  # relative to a descriptor: no PATH_MAX
                os.mkdir(b"a", dir_fd=fd)
                inner = os.open(b"a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = inner
        finally:
            os.close(fd)
    else:
        raise ValueError(entry.node)


# -- strategies ---------------------------------------------------------------------------
IDS = ["j1", "j2", "dup"]  # few, so that ids collide between inbox/, claims/ and jobs/
HUGE = 6 * 1024**3  # sparse: costs no disk; reading it whole fails under the harness's RLIMIT_AS

CANARY_FILES = ["tree/secret.txt", "tree/precious.txt", "tree/job.json", "tree/status.json"]
CANARY_DIRS = ["tree", "tree/dir"]
LINKED = ["linked/job.json", "linked/status.json", "linked/log.txt"]


def _cjk(count: int, suffix: bytes) -> bytes:
    name = ("漢" * count).encode() + suffix
    return name[: 255 - len(suffix)] + suffix if len(name) > 255 else name


def odd_names(suffix: bytes) -> st.SearchStrategy[bytes]:
    """File names that broke or may break name handling: bytes, lengths, normalisation."""
    plain = st.sampled_from(IDS).map(lambda s: s.encode() + suffix)
    raw = st.binary(min_size=1, max_size=12).map(lambda b: b + suffix)
    return st.one_of(
        plain,
        st.just(b"\xff\xfe" + suffix),  # invalid UTF-8
        st.just(b"a\xc3" + suffix),  # a UTF-8 sequence cut in half
        st.integers(1, 85).map(lambda n: _cjk(n, suffix)),  # 80 CJK = 240 bytes + suffix
        st.just(b"x" * (255 - len(suffix)) + suffix),  # the longest name
        st.just(b"y" * 128 + suffix),  # the longest valid id
        st.just(unicodedata.normalize("NFC", "café").encode() + suffix),
        st.just(unicodedata.normalize("NFD", "café").encode() + suffix),
        st.just("로그".encode() + suffix),
        st.sampled_from([b"-rf", b"a\nb", b"a b", b"..x", b"~x", b"%2e%2e"]).map(
            lambda b: b + suffix
        ),
        raw,
    ).filter(_valid_name)


def _valid_name(name: bytes) -> bool:
    return (
        0 < len(name) <= 255
        and b"/" not in name
        and b"\0" not in name
        and name
        not in (
            b".",
            b"..",
        )
    )


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


JOB_CONTENTS = st.sampled_from(
    [
        _json(GOOD_JOB),
        _json({**GOOD_JOB, "metadata": {"title": "\ud800"}}),  # a lone surrogate
        _json({**GOOD_JOB, "metadata": _deep(300)}),  # past the serializer's depth
        _json({**GOOD_JOB, "metadata": {"t": "ok"}})[:-7],  # truncated
        b"",
        b"\xff\xfe{}",
        b'{"kind": "testpattern", "priority": 99999999999999999999999}',
        _json({**GOOD_JOB, "metadata": {"x": "a" * 900_000}}),  # under the 1 MiB cap
    ]
)


# Paths a status file may name: plain names, and ways out of the job folder.
def _paths(canary: str) -> list[str]:
    return [
        "testpattern.mp4",
        "job.json",
        "../../../canary/tree/precious.txt",
        "../../../canary/tree/secret.txt",
        "../../../canary/tree/dir",
        "sub/../../../../canary/tree/precious.txt",
        f"{canary}/tree/precious.txt",
        "..",
        ".",
        "",
        "../j2",
    ]


PATH_TOKENS = st.sampled_from(_paths("@CANARY@"))


@st.composite
def status_files(draw: st.DrawFn, job_id: str) -> bytes:
    """A status.json as a client (or a half-crashed daemon) could leave it: a valid one,
    then up to three fields made hostile, then maybe truncated."""
    state = draw(st.sampled_from(["queued", "running", "running", "succeeded", "failed"]))
    status: dict[str, Any] = {
        "schemaVersion": 1,
        "jobId": job_id,
        "kind": "testpattern",
        "state": state,
        "attempt": 1,
        "maxAttempts": 3,
        "submittedAt": TS,
        "updatedAt": TS,
        "worker": {"id": DEAD, "host": "ghost", "pid": 4999999},
        "outputs": [],
        "plannedOutputs": [],
        "metadata": {},
        "history": [],
    }
    if state in ("succeeded", "failed"):
        status["finishedAt"] = draw(st.sampled_from([TS, OLD_TS]))
    mutations = {
        "jobId": st.sampled_from(["other", "../x", "", "j2", "../../canary/tree"]),
        "schemaVersion": st.sampled_from([2, "1", True]),
        "kind": st.sampled_from(["export", "nope", None]),
        "state": st.sampled_from(["x", "rejected", "cancelled"]),
        "attempt": st.sampled_from([3, 10**6, 0]),
        "maxAttempts": st.sampled_from([1, 10**6]),
        "metadata": st.sampled_from([{"t": "\ud800"}, _deep(300), {"x": "a" * 200_000}]),
        "outputs": st.lists(
            st.builds(
                lambda p, n: {"path": p, "role": "main", "sizeBytes": n},
                PATH_TOKENS,
                st.sampled_from([0, 38, -1, 10**30]),
            ),
            min_size=1,
            max_size=2,
        ),
        "plannedOutputs": st.lists(PATH_TOKENS, min_size=1, max_size=2),
        "pendingPublish": st.builds(lambda t, p: {"temp": t, "path": p}, PATH_TOKENS, PATH_TOKENS),
        "retryAt": st.sampled_from(["9999-12-31T23:59:59Z", "x", OLD_TS]),
        "finishedAt": st.sampled_from([OLD_TS, "0001-01-01T00:00:00Z"]),
        "history": st.sampled_from([[{"state": "x"}], [None] * 3]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(mutations)), max_size=3, unique=True)):
        status[name] = draw(mutations[name])
    if status.get("outputs") and draw(st.booleans()):
        status["plannedOutputs"] = [o["path"] for o in status["outputs"]]
    raw = _json(status)
    cut = draw(st.sampled_from([None] * 6 + [0, 1, len(raw) // 2]))
    return raw if cut is None else raw[:cut]


@st.composite
def heartbeat_files(draw: st.DrawFn) -> bytes:
    beat: dict[str, Any] = {
        "protocolVersion": 1,
        "workerId": draw(st.sampled_from([FAKE, DEAD, "x.y", "", "../w"])),
        "host": "elsewhere",
        "pid": draw(st.sampled_from([4999998, 1, -1, 0, "12", 10**30, None])),
        "startTicks": draw(st.sampled_from([None, 1, "x", -5])),
        "namespace": draw(st.sampled_from(["other:1", "unknown", 7])),
        "state": draw(st.sampled_from(["running", "stopping", None])),
        "startedAt": TS,
        "lastBeat": TS,
        "maxJobs": 1,
        "jobsRunning": draw(st.sampled_from([[], ["j1"], "j1", None])),
        # Settings a newer daemon may publish (issue 11, item 7), with hostile values.
        "heartbeatSeconds": draw(st.sampled_from([0.1, 2.0, 1e9, -1, None])),
        "leaseSeconds": draw(st.sampled_from([0.3, 30.0, 1e18, -1, None])),
    }
    raw = _json(beat)
    return raw if draw(st.booleans()) else raw[: draw(st.integers(0, len(raw)))]


def nodes(
    parts: tuple[bytes, ...], contents: st.SearchStrategy[bytes], linked: str
) -> st.SearchStrategy[Entry]:
    """Where a file is expected: the file, or a folder, FIFO, symlink, hard link, huge file."""
    return st.one_of(
        contents.map(lambda d: Entry(parts, "file", data=d)),
        contents.map(lambda d: Entry(parts, "file", data=d)),
        st.just(Entry(parts, "dir")),
        st.just(Entry(parts, "fifo")),
        st.sampled_from(CANARY_FILES + CANARY_DIRS).map(
            lambda t: Entry(parts, "symlink", target=f"canary:{t}")
        ),
        st.just(Entry(parts, "symlink", target="../../../canary/tree/secret.txt")),
        st.just(Entry(parts, "hardlink", target=linked)),
        st.just(Entry(parts, "sparse", size=HUGE)),
    )


@st.composite
def inbox_entries(draw: st.DrawFn) -> list[Entry]:
    suffix = draw(st.sampled_from([b".json", b".json", b".cancel", b".delete", b"", b".txt"]))
    name = draw(odd_names(suffix))
    entry = draw(nodes((b"inbox", name), JOB_CONTENTS, "linked/job.json"))
    return [_live(entry, draw(st.booleans()))]


@st.composite
def job_folders(draw: st.DrawFn) -> list[Entry]:
    """A job folder a dead worker left (recovery takes it over), then made hostile: its
    status, job file, owner token, cancel marker, log or leftovers replaced."""
    job_id = draw(st.sampled_from(IDS))
    base = (b"jobs", job_id.encode())
    files = {
        b"status.json": draw(
            status_files(job_id).map(lambda d: Entry((*base, b"status.json"), "file", data=d))
        ),
        b"job.json": Entry((*base, b"job.json"), "file", data=_json(GOOD_JOB)),
        f".owner.{DEAD}".encode(): Entry((*base, f".owner.{DEAD}".encode()), "file"),
    }
    hostile: dict[bytes, st.SearchStrategy[Any]] = {
        b"status.json": nodes((*base, b"status.json"), status_files(job_id), LINKED[1]),
        b"job.json": nodes((*base, b"job.json"), JOB_CONTENTS, LINKED[0]),
        b"owner": st.sampled_from(["released", FAKE, "none", "two", "dir", "fifo", "symlink"]),
        b"cancel": nodes((*base, b"cancel"), st.just(b"x"), LINKED[2]),
        b"job.log": nodes((*base, b"job.log"), st.just(b"x"), LINKED[2]),
        b"tmp": st.sampled_from(CANARY_FILES + CANARY_DIRS).map(
            lambda t: Entry(
                (*base, b".tmp-ab12cd-testpattern.mp4"), "symlink", target=f"canary:{t}"
            )
        ),
        b"testpattern.mp4": nodes((*base, b"testpattern.mp4"), st.just(b"\0" * 38), LINKED[2]),
    }
    for what in draw(
        st.lists(st.sampled_from(sorted(hostile)), min_size=1, max_size=3, unique=True)
    ):
        value = draw(hostile[what])
        if isinstance(value, Entry):
            files[what] = value
            continue
        del files[f".owner.{DEAD}".encode()]
        if value == "two":
            files[b"o1"] = Entry((*base, f".owner.{DEAD}".encode()), "file")
            files[b"o2"] = Entry((*base, b".owner.released"), "file")
        elif value in ("dir", "fifo", "symlink"):
            files[b"o1"] = Entry(
                (*base, f".owner.{DEAD}".encode()), value, target="canary:tree/secret.txt"
            )
        elif value != "none":
            files[b"o1"] = Entry((*base, f".owner.{value}".encode()), "file")
    live = draw(st.integers(0, 4)) == 0
    return [_live(e, live) for e in [Entry(base, "dir"), *files.values()]]


@st.composite
def odd_job_entries(draw: st.DrawFn) -> list[Entry]:
    """Things in jobs/ that are not job folders: links, files, stale staging folders."""
    name = draw(
        st.one_of(
            st.sampled_from(IDS).map(str.encode),
            st.just(b".tmp-j1.0badc0de"),
            odd_names(b""),
        )
    )
    node = draw(
        st.sampled_from(
            [
                Entry((b"jobs", name), "symlink", target="canary:tree/dir"),
                Entry((b"jobs", name), "symlink", target="canary:tree"),
                Entry((b"jobs", name), "file", data=b"{}"),
                Entry((b"jobs", name), "fifo"),
                Entry((b"jobs", name), "hardlink", target=LINKED[1]),
                Entry((b"jobs", name), "dir", age=3600.0),
            ]
        )
    )
    return [_live(node, draw(st.booleans()))]


@st.composite
def claim_entries(draw: st.DrawFn) -> list[Entry]:
    """A claim a dead worker left, with an odd name, owner, content or node."""
    job_id = draw(st.sampled_from([*IDS, "c1"]))
    owner = draw(st.sampled_from([DEAD, DEAD, "released", FAKE, "no.dots", ""]))
    name = draw(
        st.one_of(
            st.just(f"{job_id}.{owner}.json".encode()),
            st.just(f"{job_id}.{owner}.json".encode()),
            odd_names(f".{DEAD}.json".encode()),
            odd_names(b".json"),
        )
    )
    entry = draw(nodes((b"claims", name), JOB_CONTENTS, LINKED[0]))
    return [_live(entry, draw(st.booleans()))]


@st.composite
def worker_entries(draw: st.DrawFn) -> list[Entry]:
    name = draw(
        st.one_of(
            st.sampled_from([FAKE, DEAD, "x"]).map(lambda w: f"{w}.json".encode()),
            odd_names(b".json"),
        )
    )
    entry = draw(nodes((b"workers", name), heartbeat_files(), LINKED[1]))
    return [_live(entry, draw(st.booleans()))]


@st.composite
def rejected_entries(draw: st.DrawFn) -> list[Entry]:
    name = draw(odd_names(b"")).replace(b".error.json", b"")
    moved = b"20000101T000000Z-abcdef-" + name[:200]
    entries = [draw(nodes((b"rejected", moved), st.just(b"{}"), LINKED[2]))]
    error = (b"rejected", moved + b".error.json")
    if draw(st.booleans()):
        entries.append(draw(nodes(error, st.just(b'{"code": "invalid_id"}'), LINKED[1])))
    old = draw(st.booleans())
    return [
        Entry(e.parts, e.node, e.data, e.target, e.size, 40 * 86400.0 if old else 0.0)
        for e in entries
    ]


@st.composite
def trash_entries(draw: st.DrawFn) -> list[Entry]:
    name = draw(odd_names(b""))
    return [
        draw(
            st.sampled_from(
                [
                    Entry((b"trash", name), "symlink", target="canary:tree"),
                    Entry((b"trash", name, b"link"), "symlink", target="canary:tree/dir"),
                    Entry((b"trash", name), "fifo"),
                ]
            )
        )
    ]


@st.composite
def floods(draw: st.DrawFn) -> list[Entry]:
    """Work proportional to what a client can create: many entries, deep folders."""
    where = draw(
        st.sampled_from(
            [(b"inbox", b"stray"), (b"inbox", b".tmp-x"), (b"rejected", b"x"), (b"claims", b"c")]
        )
    )
    deep_in = draw(
        st.sampled_from([(b"trash", b"t"), (b"jobs", b"j1", b"deep"), (b"rejected", b"d")])
    )
    return draw(
        st.sampled_from(
            [
                [Entry(where, "many", size=draw(st.sampled_from([300, 3000])))],
                [Entry(deep_in, "deep", size=draw(st.sampled_from([50, 1200])))],
            ]
        )
    )


def _live(entry: Entry, live: bool) -> Entry:
    return Entry(entry.parts, entry.node, entry.data, entry.target, entry.size, entry.age, live)


FEATURES = st.one_of(
    inbox_entries(),
    inbox_entries(),
    job_folders(),
    job_folders(),
    odd_job_entries(),
    claim_entries(),
    worker_entries(),
    rejected_entries(),
    trash_entries(),
    floods(),
)
SETTINGS = st.sampled_from(
    [DaemonSettings(), DaemonSettings(0.2, 1.0), DaemonSettings(1.0, 3.0, 1)]
)


@st.composite
def spool_states(draw: st.DrawFn, max_features: int = 5) -> SpoolState:
    features = draw(st.lists(FEATURES, min_size=1, max_size=max_features))
    entries = tuple(e for feature in features for e in feature)
    return SpoolState(entries, draw(SETTINGS))


def resolve_placeholders(entries: tuple[Entry, ...], canary: Path) -> tuple[Entry, ...]:
    """Status files name the canary by an absolute path, known only at run time."""
    marker = b"@CANARY@"
    real = str(canary).encode()
    return tuple(
        Entry(e.parts, e.node, e.data.replace(marker, real), e.target, e.size, e.age, e.live)
        if marker in e.data
        else e
        for e in entries
    )


# -- saved states (bench results, regression corpus) -----------------------------------------
def state_to_json(state: SpoolState) -> dict[str, Any]:
    """Raw bytes as latin-1 strings (every byte maps to one code point and back)."""
    return {
        "settings": {
            "heartbeat": state.settings.heartbeat,
            "lease": state.settings.lease,
            "max_jobs": state.settings.max_jobs,
        },
        "entries": [
            {
                "parts": [p.decode("latin-1") for p in e.parts],
                "node": e.node,
                "data": e.data.decode("latin-1"),
                "target": e.target,
                "size": e.size,
                "age": e.age,
                "live": e.live,
            }
            for e in state.entries
        ],
    }


def state_from_json(obj: dict[str, Any]) -> SpoolState:
    return SpoolState(
        tuple(
            Entry(
                tuple(p.encode("latin-1") for p in e["parts"]),
                e["node"],
                e["data"].encode("latin-1"),
                e["target"],
                e["size"],
                e["age"],
                e["live"],
            )
            for e in obj["entries"]
        ),
        DaemonSettings(**obj["settings"]),
    )
