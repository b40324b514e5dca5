"""The web module's verifyWebhook (web/src/webhooks.ts) in a real Node receiver on loopback,
fed by the real `spooler webhook test`; plus the spec's example vector (web/test/webhooks.test.ts).

Needs Node.js (>= 20) and web/node_modules (.ci/run runs `npm ci`); skipped only without node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parent.parent / "web"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="Node.js/npm not installed: the web verifier test needs them",
)


def test_node_receiver_verifies_spooler_webhooks(tmp_path: Path) -> None:
    if not (WEB / "node_modules" / ".bin" / "tsc").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=WEB,
            check=True,
            capture_output=True,
            timeout=300,
        )
    out_dir = tmp_path / "dist"
    tsc = str(WEB / "node_modules" / ".bin" / "tsc")
    compiled = subprocess.run(
        [tsc, "-p", "tsconfig.json", "--outDir", str(out_dir)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env["SPOOLER_PYTHON"] = sys.executable
    result = subprocess.run(
        ["node", "--test", str(out_dir / "test" / "webhooks.test.js")],
        cwd=WEB,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# pass 2" in result.stdout and "# fail 0" in result.stdout
