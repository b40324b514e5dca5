"""The example Next.js app (examples/next-app/) built with `next build` and driven in a real
headless Chromium against a real daemon: upload, errors, cancel, progress, download, seek.

Needs Node.js >= 20.19 (Next.js 16, @tus/server), npm and Debian's `chromium`; .ci/run
installs them. Skipped, with the reason, when one is missing. The browser part is bounded
(e2e/browser.mjs stops itself after 90 s); the build takes some 25 s on two cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import pytest
from support import FAST_SETTINGS, free_port

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
APP = ROOT / "examples" / "next-app"
CHROMIUM = os.environ.get("SPOOLER_CHROMIUM", "/usr/bin/chromium")
MIN_NODE = (20, 19)


def _node_version() -> tuple[int, ...] | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.match(r"v(\d+)\.(\d+)", out.strip())
    return (int(match[1]), int(match[2])) if match else None


def _skip_reason() -> str | None:
    version = _node_version()
    if version is None or shutil.which("npm") is None:
        return "Node.js/npm not installed (.ci/run provides them)"
    if version < MIN_NODE:
        return f"Node.js {version} is older than 20.19 (Next.js 16 and @tus/server need it)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    return None


pytestmark = [
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
    pytest.mark.timeout(420),
]


def _newest_mtime(folder: Path) -> float:
    return max(p.stat().st_mtime for p in folder.rglob("*") if p.is_file())


def _npm_ci(folder: Path, marker: str, stale_after: float = 0.0) -> None:
    """`npm ci` unless done (`marker` installed, and newer than `stale_after`)."""
    installed = folder / "node_modules" / marker
    if not installed.exists() or installed.stat().st_mtime < stale_after:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def built_app() -> str:
    """`next build` of the example; returns its output (checked for tracing warnings)."""
    _npm_ci(WEB, "@tus/server")
    # The app installs web/ as a packed copy: a copy older than web/src is reinstalled.
    subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB, check=True, timeout=180)
    _npm_ci(APP, "@spooler/client/package.json", stale_after=_newest_mtime(WEB / "src"))
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    result = subprocess.run(
        ["npx", "--no-install", "next", "build"],
        cwd=APP,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _clip(path: Path, seconds: int, frequency: int) -> None:
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=64x36:rate=10:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-shortest", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip


@pytest.fixture
def stack(tmp_path: Path, built_app: str) -> Iterator[dict[str, str]]:
    """A daemon (one job slot) and `next start` on loopback, on a temporary spool and media."""
    spool, media = tmp_path / "spool", tmp_path / "media"
    media.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    daemon_env = {
        **env,
        **FAST_SETTINGS,
        "SPOOLER_SPOOL_DIR": str(spool),
        "SPOOLER_MEDIA_ROOTS": json.dumps([str(media)]),
        "SPOOLER_MAX_JOBS": "1",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    with (logs / "daemon.log").open("wb") as dlog, (logs / "next.log").open("wb") as nlog:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "spooler", "run"],
            env=daemon_env, cwd=tmp_path, stdout=dlog, stderr=subprocess.STDOUT,
        )  # fmt: skip
        app_env = {
            **env,
            "SPOOLER_SPOOL_DIR": str(spool),
            "SPOOLER_MEDIA_DIR": str(media),
            "SPOOLER_VERDICT_WAIT_MS": "3000",
            "NEXT_TELEMETRY_DISABLED": "1",
        }
        server = subprocess.Popen(
            ["npx", "--no-install", "next", "start", "-H", "127.0.0.1", "-p", str(port)],
            env=app_env, cwd=APP, stdout=nlog, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base, timeout=2) as response:
                    if response.status == 200 and (spool / "workers").is_dir():
                        break
            except OSError:
                pass
            assert server.poll() is None, (logs / "next.log").read_text()
            assert daemon.poll() is None, (logs / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the app did not answer within 60 s"
            time.sleep(0.2)
        yield {"base": base, "spool": str(spool), "media": str(media), "logs": str(logs)}
    finally:
        os.killpg(server.pid, 15)
        daemon.terminate()
        for proc in (server, daemon):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_build_traces_no_project_files(built_app: str) -> None:
    # The package's fs calls are all marked for Turbopack: no whole-project tracing.
    assert "Dynamic filesystem access" not in built_app, built_app[-4000:]
    assert "whole project" not in built_app, built_app[-4000:]
    for name in ("export", "upload"):
        trace = next((APP / ".next" / "server" / "app" / "api" / name).glob("*/route.js.nft.json"))
        files = json.loads(trace.read_text())["files"]
        own = [
            f
            for f in files
            if "node_modules" not in f and "/chunks/" not in f and not f.startswith("route_")
        ]
        assert own == [], f"{name} route traces project files: {own[:10]}"


def test_the_example_app_in_a_real_browser(stack: dict[str, str], tmp_path: Path) -> None:
    clips = [tmp_path / "cam-a.mp4", tmp_path / "cam-b.mp4"]
    _clip(clips[0], 3, 440)
    _clip(clips[1], 3, 660)
    started = time.monotonic()
    result = subprocess.run(
        ["node", "e2e/browser.mjs"],
        cwd=APP,
        env={
            **os.environ,
            "BASE_URL": stack["base"],
            "CLIPS": ":".join(str(c) for c in clips),
            "SPOOL_DIR": stack["spool"],
            "CHROMIUM": CHROMIUM,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    logs = Path(stack["logs"])
    assert result.returncode == 0, (
        result.stdout[-3000:]
        + result.stderr[-5000:]
        + "\n--- next ---\n"
        + (logs / "next.log").read_text()[-3000:]
        + "\n--- daemon ---\n"
        + (logs / "daemon.log").read_text()[-3000:]
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print("browser figures:", json.dumps(figures))
    assert 206 in figures["downloadStatuses"]
    # The uploads landed, complete, in the user's folder; nothing is left in staging.
    uploads = Path(stack["media"]) / "users" / "demo" / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["cam-a.mp4", "cam-b.mp4"]
    assert [p.read_bytes() for p in sorted(uploads.iterdir())] == [c.read_bytes() for c in clips]
    assert list((Path(stack["media"]) / ".uploads").iterdir()) == []
    assert time.monotonic() - started < 90
