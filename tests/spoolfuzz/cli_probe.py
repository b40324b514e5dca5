"""Run read-only `spooler` CLI commands against a hostile spool, all at once, with a timeout.

    python cli_probe.py '<json list of argument lists>' TIMEOUT

One process (one interpreter start-up for all commands); each command runs in its own
thread, so one that blocks (a FIFO opened for reading) costs the timeout and the rest still
answer. Only how a command ends is looked at, not what it prints (stdout goes to
/dev/null). Prints one JSON line per command: {"args", "result": ok|timeout|crash, "exit",
"error"}. A crash is any exception other than the command's own exit or a usage error:
what a user would see as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any

import click

from spooler.cli import main


def probe(args: list[str], out: dict[str, Any]) -> None:
    try:
        main.main(args, prog_name="spooler", standalone_mode=False)
        out.update(result="ok", exit=0)
    except SystemExit as exc:
        out.update(result="ok", exit=exc.code if isinstance(exc.code, int) else 1)
    except click.exceptions.Exit as exc:
        out.update(result="ok", exit=exc.exit_code)
    except click.ClickException as exc:
        out.update(result="ok", exit=exc.exit_code)
    except BaseException as exc:
        lines = traceback.format_exception(exc)
        out.update(
            result="crash",
            error=lines[-1].strip(),
            where="".join(lines[-3:-1]).strip(),
        )


def main_probe() -> None:
    commands: list[list[str]] = json.loads(sys.argv[1])
    timeout = float(sys.argv[2])
    # As on a UTF-8 terminal (en_US.UTF-8: errors "strict"), so an unprintable name counts.
    sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8", errors="strict")  # noqa: SIM115
    results: list[dict[str, Any]] = []
    threads = []
    for args in commands:
        out: dict[str, Any] = {"args": args, "result": "timeout", "exit": None, "error": None}
        results.append(out)
        thread = threading.Thread(target=probe, args=(args, out), daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for out in results:
        os.write(1, (json.dumps(out) + "\n").encode())
    os._exit(0)  # threads stuck on a FIFO would keep the interpreter alive


if __name__ == "__main__":
    main_probe()
