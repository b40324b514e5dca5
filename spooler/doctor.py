"""`spooler doctor`: is this machine ready to run the daemon? A PASS/WARN/FAIL list.

Checks: ffmpeg (found, version, the encoders and filters export jobs use), the spool
(exists or can be made, create/rename/remove work in inbox/ and jobs/), media roots,
inotify limits, free disk on the spool, fonts for text watermarks. FAIL means jobs cannot
run; WARN means something will be slow, limited or fail later for some jobs.

The evaluate_* functions are pure (tests feed them values); the check_* functions gather
the facts from the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from spooler.config import Settings
from spooler.errors import JobError
from spooler.ffmpeg import ffmpeg_version, find_ffmpeg
from spooler.fonts import AUTO, INSTALL_HINT, find_fonts, resolve_font
from spooler.layout import SpoolLayout


class Level(StrEnum):
    PASS = "PASS"  # noqa: S105 (a check result, not a password)
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["level"] = self.level.value
        return data


# Every job needs these (testpattern and the default export: H.264 + AAC in MP4).
REQUIRED_ENCODERS: tuple[str, ...] = ("libx264", "aac")
# Export options that need more (output.videoCodec hevc/vp9/av1, audioCodec opus).
OPTIONAL_ENCODERS: dict[str, str] = {
    "libx265": "videoCodec hevc",
    "libvpx-vp9": "videoCodec vp9",
    "libsvtav1": "videoCodec av1",
    "libopus": "audioCodec opus / webm",
    "libwebp": "poster format webp",
}
OPTIONAL_FILTERS: dict[str, str] = {"drawtext": "text watermarks"}

# inotify: one instance per daemon, a few watches each; other programs of the same user
# share the limits, so warn well before they would be exhausted.
MIN_INOTIFY_INSTANCES = 8
MIN_INOTIFY_WATCHES = 1024

GIB = 1024**3
DISK_FAIL_BYTES = 1 * GIB
DISK_WARN_BYTES = 10 * GIB

_CODEC_LINE = re.compile(r"^\s*[A-Z.]{6}\s+(\S+)")
_FILTER_LINE = re.compile(r"^\s*[A-Z.]{2,3}\s+(\S+)\s+\S+->\S+")


# ---- pure evaluation ------------------------------------------------------------------------


def parse_codec_list(text: str) -> set[str]:
    """Names from `ffmpeg -encoders` output (lines like ' V....D libx264   libx264 H.264 ...')."""
    names: set[str] = set()
    for line in text.splitlines():
        match = _CODEC_LINE.match(line)
        if match and match[1] != "=":
            names.add(match[1])
    return names


def parse_filter_list(text: str) -> set[str]:
    """Names from `ffmpeg -filters` output (lines like ' T. drawtext  V->V  Draw text ...')."""
    return {m[1] for line in text.splitlines() if (m := _FILTER_LINE.match(line))}


def evaluate_encoders(encoders: set[str], filters: set[str]) -> list[Check]:
    checks: list[Check] = []
    missing = [name for name in REQUIRED_ENCODERS if name not in encoders]
    if missing:
        checks.append(
            Check(
                "ffmpeg encoders",
                Level.FAIL,
                f"missing required encoder(s): {', '.join(missing)}",
                {"missing": missing},
            )
        )
    else:
        checks.append(
            Check("ffmpeg encoders", Level.PASS, f"{', '.join(REQUIRED_ENCODERS)} available")
        )
    optional_missing = {n: use for n, use in OPTIONAL_ENCODERS.items() if n not in encoders}
    if optional_missing:
        listed = ", ".join(f"{n} ({use})" for n, use in optional_missing.items())
        checks.append(
            Check(
                "ffmpeg optional encoders",
                Level.WARN,
                f"missing: {listed}; jobs asking for them will fail",
                {"missing": sorted(optional_missing)},
            )
        )
    else:
        checks.append(
            Check(
                "ffmpeg optional encoders",
                Level.PASS,
                ", ".join(OPTIONAL_ENCODERS) + " available",
            )
        )
    for name, use in OPTIONAL_FILTERS.items():
        if name in filters:
            checks.append(Check(f"ffmpeg filter {name}", Level.PASS, f"available ({use})"))
        else:
            checks.append(
                Check(
                    f"ffmpeg filter {name}",
                    Level.WARN,
                    f"not in this ffmpeg build: no {use} (needs --enable-libfreetype)",
                )
            )
    return checks


def evaluate_inotify(watches: int | None, instances: int | None, watch_mode: str) -> Check:
    name = "inotify limits"
    details = {"max_user_watches": watches, "max_user_instances": instances}
    if watch_mode == "polling":
        return Check(name, Level.PASS, "not used (watch_mode: polling)", details)
    if watches is None or instances is None:
        return Check(
            name,
            Level.WARN,
            "cannot read /proc/sys/fs/inotify; the daemon falls back to polling if inotify fails",
            details,
        )
    if instances < 1 or watches < 1:
        level = Level.FAIL if watch_mode == "inotify" else Level.WARN
        return Check(
            name,
            level,
            f"inotify unusable (instances {instances}, watches {watches}); "
            "use watch_mode: polling or raise fs.inotify.max_user_instances/max_user_watches",
            details,
        )
    if instances < MIN_INOTIFY_INSTANCES or watches < MIN_INOTIFY_WATCHES:
        return Check(
            name,
            Level.WARN,
            f"low: max_user_instances {instances} (want >= {MIN_INOTIFY_INSTANCES}), "
            f"max_user_watches {watches} (want >= {MIN_INOTIFY_WATCHES}); "
            "raise with sysctl fs.inotify.max_user_instances=128",
            details,
        )
    return Check(
        name, Level.PASS, f"max_user_watches {watches}, max_user_instances {instances}", details
    )


def evaluate_disk(free_bytes: int, total_bytes: int, where: Path) -> Check:
    details = {"path": str(where), "freeBytes": free_bytes, "totalBytes": total_bytes}
    text = f"{free_bytes / GIB:.1f} GiB free of {total_bytes / GIB:.1f} GiB on {where}"
    if free_bytes < DISK_FAIL_BYTES:
        return Check("free disk", Level.FAIL, f"{text}: exports will fail (disk_full)", details)
    if free_bytes < DISK_WARN_BYTES:
        return Check("free disk", Level.WARN, f"{text}: enough for short exports only", details)
    return Check("free disk", Level.PASS, text, details)


def evaluate_fonts(setting: str, font: str | None, fonts: Sequence[str]) -> Check:
    """Text watermarks: the font `export.watermark_font` gives (resolved), among `fonts`."""
    details = {"setting": setting, "font": font, "fontFiles": len(fonts)}
    if font is None:
        why, fix = (
            ("no fonts found", f"install fonts with `{INSTALL_HINT}`")
            if setting == AUTO
            else (
                f"export.watermark_font {setting!r} is not a readable font file",
                "set it to a font file, or to auto",
            )
        )
        return Check(
            "fonts",
            Level.WARN,
            f"{why}: text watermarks are unavailable (jobs with watermark.text fail); {fix}",
            details,
        )
    return Check(
        "fonts", Level.PASS, f"text watermarks use {font} ({len(fonts)} font file(s))", details
    )


def overall(checks: Iterable[Check]) -> Level:
    levels = {c.level for c in checks}
    if Level.FAIL in levels:
        return Level.FAIL
    return Level.WARN if Level.WARN in levels else Level.PASS


# ---- gathering facts ------------------------------------------------------------------------


def _ffmpeg_list(binary: str, what: str) -> str:
    result = subprocess.run(
        [binary, "-hide_banner", what], capture_output=True, text=True, timeout=20, check=False
    )
    return result.stdout


def check_ffmpeg(settings: Settings) -> list[Check]:
    try:
        binary = find_ffmpeg(settings.ffmpeg_path)
    except JobError as exc:
        return [Check("ffmpeg", Level.FAIL, exc.message)]
    try:
        version = ffmpeg_version(binary)
        encoders = parse_codec_list(_ffmpeg_list(binary, "-encoders"))
        filters = parse_filter_list(_ffmpeg_list(binary, "-filters"))
    except (OSError, subprocess.SubprocessError) as exc:
        return [Check("ffmpeg", Level.FAIL, f"{binary} does not run: {exc}", {"path": binary})]
    found = Check(
        "ffmpeg",
        Level.PASS if version else Level.WARN,
        f"{binary} (version {version or 'unknown'})",
        {"path": binary, "version": version},
    )
    return [found, *evaluate_encoders(encoders, filters)]


def _probe_directory(directory: Path) -> str | None:
    """Create, rename and remove a hidden file in `directory`; None if all worked."""
    token = secrets.token_hex(4)
    # Dot-names: the daemon ignores them (docs/protocol.md §3), so a running daemon is fine.
    first = directory / f".doctor-{os.getpid()}-{token}.tmp"
    second = directory / f".doctor-{os.getpid()}-{token}.renamed.tmp"
    step = "create"
    try:
        fd = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
        os.close(fd)
        step = "rename"
        first.rename(second)
        step = "remove"
        second.unlink()
    except OSError as exc:
        return f"cannot {step} a file in {directory}: {exc.strerror or exc}"
    finally:
        for leftover in (first, second):
            with contextlib.suppress(OSError):
                leftover.unlink()
    return None


def check_spool(settings: Settings) -> list[Check]:
    layout = SpoolLayout(settings.spool_dir)
    root = layout.root
    if not root.exists():
        parent = next((p for p in root.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK | os.X_OK):
            return [
                Check(
                    "spool",
                    Level.WARN,
                    f"{root} does not exist yet; the daemon will create it under {parent}",
                    {"path": str(root)},
                )
            ]
        return [
            Check(
                "spool",
                Level.FAIL,
                f"{root} does not exist and {parent} is not writable by uid {os.getuid()}",
                {"path": str(root)},
            )
        ]
    if not root.is_dir():
        return [Check("spool", Level.FAIL, f"{root} is not a directory", {"path": str(root)})]
    checks: list[Check] = []
    for directory in (layout.inbox, layout.jobs):
        target = directory if directory.is_dir() else root
        problem = _probe_directory(target)
        name = f"spool {directory.name}/"
        if problem:
            checks.append(Check(name, Level.FAIL, problem, {"path": str(target)}))
            continue
        mode = target.stat().st_mode
        note = "" if target == directory else " (not created yet; probed the spool root)"
        if not mode & 0o020:
            checks.append(
                Check(
                    name,
                    Level.WARN,
                    f"create/rename work in {target}{note}, but it is not group-writable: "
                    "the web app must run as the same user (chmod g+ws, UMask=0002)",
                    {"path": str(target), "mode": oct(mode & 0o7777)},
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    Level.PASS,
                    f"create/rename/remove work in {target}{note}",
                    {"path": str(target), "mode": oct(mode & 0o7777)},
                )
            )
    return checks


def check_media_roots(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    for media in settings.media_roots:
        details = {"path": str(media)}
        if not media.is_dir():
            message = f"{media} is not a directory: exports from it fail with source_missing"
            checks.append(Check("media root", Level.WARN, message, details))
        elif not os.access(media, os.R_OK | os.X_OK):
            message = f"{media} is not readable by uid {os.getuid()}"
            checks.append(Check("media root", Level.FAIL, message, details))
        else:
            checks.append(Check("media root", Level.PASS, f"{media} readable", details))
    return checks


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def check_inotify(settings: Settings, proc: Path = Path("/proc")) -> Check:
    base = proc / "sys/fs/inotify"
    return evaluate_inotify(
        _read_int(base / "max_user_watches"),
        _read_int(base / "max_user_instances"),
        settings.watch_mode,
    )


def check_disk(settings: Settings) -> Check:
    where = settings.spool_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    return evaluate_disk(usage.free, usage.total, where)


def run_checks(settings: Settings) -> list[Check]:
    return [
        *check_ffmpeg(settings),
        *check_spool(settings),
        *check_media_roots(settings),
        check_inotify(settings),
        check_disk(settings),
        evaluate_fonts(
            settings.export.watermark_font,
            resolve_font(settings.export.watermark_font),
            find_fonts(),
        ),
    ]


def render_text(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"{c.level.value:<4}  {c.name:<{width}}  {c.message}" for c in checks]
    counts = {level: sum(c.level is level for c in checks) for level in Level}
    lines.append(
        f"{overall(checks).value}: {counts[Level.PASS]} passed, "
        f"{counts[Level.WARN]} warning(s), {counts[Level.FAIL]} failed"
    )
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {
        "result": overall(checks).value,
        "ok": overall(checks) is not Level.FAIL,
        "checks": [c.to_json() for c in checks],
    }
