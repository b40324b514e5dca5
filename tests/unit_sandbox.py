"""Run a command under the system-call sandbox that systemd/spooler.service declares.

    /usr/bin/python3 tests/unit_sandbox.py UNIT_FILE -- COMMAND [ARGS...]

An emulation for tests (no systemd needed): the unit's SystemCallFilter= lines are expanded
with `systemd-analyze syscall-filter` (allow list minus the `~` deny lists), loaded with
libseccomp (python3-seccomp, hence the system interpreter) with EPERM for everything else,
as SystemCallErrorNumber=EPERM does; NoNewPrivileges=yes and MemoryDenyWriteExecute=yes
become prctl(PR_SET_NO_NEW_PRIVS) and prctl(PR_SET_MDWE) (Linux >= 6.3; the kernel-native
form systemd itself uses where available). Then COMMAND is exec'd: the filter is inherited
by it and every child (ffmpeg).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import sys
from pathlib import Path

import seccomp  # type: ignore[import-not-found]

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def expand(group: str, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                names |= expand(item, seen)
        else:
            names.add(item)
    return names


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def main() -> None:
    unit = Path(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1 :]
    settings = unit_settings(unit)
    allowed: set[str] = set()
    denied: set[str] = set()
    for value in settings.get("SystemCallFilter", []):
        negate = value.startswith("~")
        for entry in value.lstrip("~").split():
            names = expand(entry) if entry.startswith("@") else {entry}
            (denied if negate else allowed).update(names)
    if not allowed:
        sys.exit("the unit has no SystemCallFilter= allow list")
    libc = ctypes.CDLL(None, use_errno=True)
    no_new_privileges = settings.get("NoNewPrivileges", ["no"])[-1] == "yes"
    if no_new_privileges and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_NO_NEW_PRIVS) failed")
    deny_write_execute = settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"
    if deny_write_execute and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_MDWE) failed (kernel {os.uname().release}, needs >= 6.3)")
    error_name = settings.get("SystemCallErrorNumber", ["EPERM"])[-1]
    syscall_filter = seccomp.SyscallFilter(
        defaction=seccomp.ERRNO(getattr(errno, error_name, errno.EPERM))
    )
    for name in sorted(allowed - denied):
        # A name this kernel or libseccomp does not know is skipped.
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            syscall_filter.add_rule(seccomp.ALLOW, name)
    syscall_filter.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
