"""Proxy on upload with the real daemon: a slow writer, a rename-into-place writer, a
duplicate upload, hostile entries, and a restart in between: one proxy job per source
content, each with its own id, never two."""

from __future__ import annotations

import json
import os
import shutil
import time

from ingest_media import run


def _proxy_jobs(spool) -> dict[str, str]:
    """job id -> source, of every proxy job the spool has seen (inbox or jobs)."""
    out = {}
    for path in [*spool.layout.inbox.glob("*.json"), *spool.layout.jobs.glob("*/job.json")]:
        body = json.loads(path.read_text())
        if body.get("kind") == "proxy":
            job_id = path.parent.name if path.name == "job.json" else path.stem
            out[job_id] = body["source"]
    return out


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met")


def test_each_upload_gets_one_proxy_job(spool, make_daemon, tmp_path, ffmpeg) -> None:
    # Given a daemon watching media/uploads, with a derived-media root
    uploads = spool.media / "uploads"
    (uploads / "day1").mkdir(parents=True)
    derived = uploads / "derived"  # inside the watched folder: never proxied itself
    clip = tmp_path / "clip.mp4"
    run(ffmpeg, "-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=1", "-f", "lavfi", "-i",
        "sine=d=1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
        str(clip))  # fmt: skip
    settings = {
        "SPOOLER_INGEST__DERIVED_ROOT": str(derived),
        "SPOOLER_INGEST__UPLOAD_DIRS": json.dumps([str(uploads)]),
        "SPOOLER_INGEST__UPLOAD_SETTLE_SECONDS": "1.5",
    }
    daemon = make_daemon(**settings)
    data = clip.read_bytes()

    # When a slow writer writes day1/slow.mp4 in place, pausing with the file open
    with (uploads / "day1" / "slow.mp4").open("wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(2.5)  # past the settle time: only the open writer says "not done"
        # Then nothing was submitted while it was being written
        assert _proxy_jobs(spool) == {}
        f.write(data[len(data) // 2 :])
    # And a rename-into-place writer (rsync: a hidden name, then a rename)
    hidden = uploads / ".cam2.mp4.Xy12ab"
    hidden.write_bytes(data)
    hidden.rename(uploads / "cam2.mp4")
    # And entries that must never be touched: a browser's partial file, a symlink out of
    # the folder, a FIFO (opening it would block), a tus upload in progress, a non-video
    (uploads / "big.mp4.part").write_bytes(data)
    (uploads / "link.mp4").symlink_to(clip)
    os.mkfifo(uploads / "pipe.mp4")
    (uploads / "tus123").write_bytes(data)
    (uploads / "tus123.info").write_text("{}")
    (uploads / "notes.txt").write_text("hello")
    (uploads / "odd name\u00e9 (1).mp4").write_bytes(data)

    _wait(lambda: len(_proxy_jobs(spool)) == 3)
    jobs = _proxy_jobs(spool)
    assert sorted(jobs.values()) == ["uploads/cam2.mp4", "uploads/day1/slow.mp4",
                                     "uploads/odd name\u00e9 (1).mp4"]  # fmt: skip
    assert len(set(jobs)) == 3  # each its own id
    for job_id in jobs:
        assert spool.wait_final(job_id, timeout=60)["state"] == "succeeded"
    manifest = json.loads((derived / "manifests" / "uploads/cam2.mp4.json").read_text())
    assert manifest["frameCount"] == 10 and (derived / manifest["proxy"]).is_file()

    # When the same file is delivered again to the same name (a retried rsync keeps the
    # bytes and the mtime), and the daemon restarts in between
    daemon.stop()
    stat = (uploads / "cam2.mp4").stat()
    again = uploads / ".cam2.mp4.retry"
    shutil.copyfile(clip, again)
    os.utime(again, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again.rename(uploads / "cam2.mp4")
    daemon = make_daemon(**settings)
    time.sleep(3.0)  # several passes past the settle time
    # Then no job is submitted twice
    assert _proxy_jobs(spool) == jobs
    # But a changed file under a known name is new content: one more job
    (uploads / "cam2.mp4").write_bytes(data + b"\0" * 16)
    _wait(lambda: len(_proxy_jobs(spool)) == 4)
    time.sleep(2.0)
    assert len(_proxy_jobs(spool)) == 4
    assert daemon.proc.poll() is None
    daemon.stop()
