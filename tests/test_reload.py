"""SIGHUP re-reads the config file (systemd's ExecReload): what can change at run time is
applied and logged, what needs a restart is logged, and running jobs go on untouched."""

from __future__ import annotations

import signal
from pathlib import Path

from support import Spool, tiny_job


def test_sighup_reloads_the_config_and_keeps_running_jobs(
    spool: Spool, make_daemon, tmp_path: Path
) -> None:
    config = tmp_path / "spooler.yaml"
    config.write_text("max_jobs: 1\nretention:\n  succeeded_days: 7\n")
    daemon = make_daemon(extra_env={"SPOOLER_CONFIG": str(config)})
    spool.submit("long", tiny_job(duration=3, realtime=True))
    spool.wait_state("long", "running")
    # When the operator edits the file and reloads
    config.write_text("max_jobs: 2\nretention:\n  succeeded_days: 1\nwatch_mode: polling\n")
    daemon.proc.send_signal(signal.SIGHUP)
    event = daemon.wait_event("config_reloaded")
    # Then what can change is applied, the rest waits for a restart, and the job goes on
    assert sorted(event["applied"]) == ["max_jobs", "retention"]
    assert event["needs_restart"] == ["watch_mode"]
    spool.submit("second", tiny_job())
    assert spool.wait_final("second")["state"] == "succeeded"  # the new second slot
    final = spool.wait_final("long")
    assert final["state"] == "succeeded" and final["attempt"] == 1
    assert daemon.proc.poll() is None
    # A broken file is refused and the running settings are kept.
    config.write_text("max_jobs: [\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert "not valid YAML" in daemon.wait_event("config_reload_failed")["error"]
    assert daemon.proc.poll() is None
