"""The web app's side of the contract (web/): generated TypeScript types stay in sync with
the committed JSON Schemas, and the TypeScript module works against a real daemon.

Needs Node.js (>= 20) and web/node_modules; `npm ci` is run here if node_modules is missing
(.ci/run runs it beforehand). Skipped, with the reason, only when node or npm is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
TYPES = WEB / "src" / "types.ts"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="Node.js/npm not installed: the web contract tests need them",
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    modules = WEB / "node_modules"
    if (
        not (modules / ".bin" / "tsc").exists()
        or not (modules / "json-schema-to-typescript").is_dir()
        or not (modules / "@tus" / "server").is_dir()
    ):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=WEB,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return modules


def test_types_match_the_committed_schemas(node_modules: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        ["node", "scripts/gen-types.mjs", "--out", str(tmp_path)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in ("types.ts", "job-schema.ts"):
        committed = WEB / "src" / name
        assert committed.exists(), f"run `npm run gen-types` in web/ to create src/{name}"
        assert committed.read_text() == (tmp_path / name).read_text(), (
            f"web/src/{name} is out of date with schema/*.json: "
            "run `make schema` then `npm run gen-types` in web/ and commit the result"
        )


def test_typescript_module_against_a_real_daemon(node_modules: Path) -> None:
    # Compiled inside web/ so the package's dependencies (ajv, @tus/*) resolve from its
    # node_modules; a fresh folder per run, removed afterwards.
    out_dir = Path(tempfile.mkdtemp(prefix=".test-dist-", dir=WEB))
    try:
        _compile_and_run(node_modules, out_dir)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _compile_and_run(node_modules: Path, out_dir: Path) -> None:
    compiled = subprocess.run(
        [str(node_modules / ".bin" / "tsc"), "-p", "tsconfig.json", "--outDir", str(out_dir)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLER_")}
    env["SPOOLER_PYTHON"] = sys.executable
    names = ("pure.test.js", "spooler.test.js", "routes.test.js")
    tests = [str(out_dir / "test" / name) for name in names]
    result = subprocess.run(
        ["node", "--test", *tests],
        cwd=WEB,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout
