"""Export from proxies: the job names proxies explicitly (sourceKind), the export reads the
originals their manifests name and says so in the preflight; a missing original is
source_missing naming it."""

from __future__ import annotations

import json

import pytest
from ingest_media import run

from spooler.errors import JobError
from spooler.media import probe


def test_export_from_proxies_renders_the_originals(run_kind, roots, ffmpeg) -> None:
    # Given a 1080p original and its 720p proxy
    media, derived = roots
    run(ffmpeg, "-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=10:d=1", "-f", "lavfi", "-i",
        "sine=d=1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
        str(media / "cam1.mp4"))  # fmt: skip
    run_kind({"kind": "proxy", "source": "cam1.mp4", "waveform": None, "poster": False})
    manifest = json.loads((derived / "manifests" / "cam1.mp4.json").read_text())
    assert (manifest["width"], manifest["height"]) == (1280, 720)
    # When the editor exports naming the proxy
    job = {
        "kind": "export",
        "angles": [{"id": "cam1", "source": manifest["proxy"], "sourceKind": "proxy"}],
        "segments": [{"angle": "cam1", "start": 0, "end": 1}],
    }
    ctx = run_kind(job)
    # Then the output is made from the original, and the preflight says so
    out = ctx.job_dir / ctx.published[0].path
    assert (probe(out).width, probe(out).height) == (1920, 1080)
    assert ctx.preflight["fromProxies"] == [
        {"for": "cam1", "proxy": manifest["proxy"], "original": "cam1.mp4",
         "contentKey": manifest["contentKey"]}
    ]  # fmt: skip
    # And without its original, it is source_missing naming the original
    (media / "cam1.mp4").unlink()
    with pytest.raises(JobError) as info:
        run_kind(job)
    assert info.value.code == "source_missing"
    assert "'cam1.mp4'" in info.value.message and info.value.details["source"] == "cam1.mp4"
    # A path that is not a proxy under the derived root is refused, not followed
    bad = {**job, "angles": [{"id": "cam1", "source": "x/y.mp4", "sourceKind": "proxy"}]}
    with pytest.raises(JobError) as info:
        run_kind(bad)
    assert info.value.code == "source_not_allowed"
