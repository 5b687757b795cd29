"""Fixtures of the viewer tests: a phantom study with every SEG variant and the SR, and the
node reader that parses them with OHIF's own libraries (viewer/read_dicom.mjs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.viewer.viewer_objects import ViewerObjects, write_viewer_objects

ROOT = Path(__file__).resolve().parents[2]
VIEWER_DIR = ROOT / "viewer"
READER = VIEWER_DIR / "read_dicom.mjs"
#: A phantom with all three classes present (seed 11 has consolidation; 4242 has almost none).
PHANTOM_SEED = 11
PHANTOM_SIZE = 64
PHANTOM_SLICES = 24


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/setup.sh installs Debian nodejs)")
    if not (VIEWER_DIR / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        pytest.fail(
            "viewer/node_modules is missing: run scripts/setup.sh "
            "(npm ci of viewer/package-lock.json).",
            pytrace=False,
        )
    return node


@pytest.fixture(scope="session")
def viewer_objects(tmp_path_factory: pytest.TempPathFactory) -> ViewerObjects:
    """BINARY, LABELMAP (RLE and uncompressed), overlapping SEGs and the SR of one phantom."""
    from training.phantom import generate_dataset

    root = tmp_path_factory.mktemp("viewer_phantom")
    manifest = generate_dataset(
        root,
        studies=1,
        seed=PHANTOM_SEED,
        size=PHANTOM_SIZE,
        slices=PHANTOM_SLICES,
        lesion_free_fraction=0.0,
        progress=False,
    )
    study = json.loads(manifest.read_text())["studies"][0]
    objects = write_viewer_objects(
        root / study["dicom"], root / study["label"], tmp_path_factory.mktemp("viewer_objects")
    )
    present = np.bincount(objects.labels.ravel(), minlength=4)
    assert (present[1:] > 0).all(), f"phantom must hold every class, has {present.tolist()}"
    return objects


#: The objects the node reader parses, by ViewerObjects attribute.
SEG_VARIANTS = ("binary", "labelmap", "labelmap_uncompressed", "overlapping")


@pytest.fixture(scope="session")
def ohif_reading(viewer_objects: ViewerObjects, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What viewer/read_dicom.mjs makes of every SEG variant and the SR, by variant name
    ("sr" for the SR); one node process reads them all (its start-up is the slow part)."""
    node = require_node()
    ct = [str(p) for p in viewer_objects.ct_files]
    jobs = [
        {"kind": "seg", "path": str(getattr(viewer_objects, v)), "ct": ct} for v in SEG_VARIANTS
    ]
    jobs.append({"kind": "sr", "path": str(viewer_objects.sr)})
    jobs_file = tmp_path_factory.mktemp("node_jobs") / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    done = subprocess.run(
        [node, str(READER), "jobs", str(jobs_file)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=VIEWER_DIR,
    )
    assert done.returncode == 0, f"node reader failed:\n{done.stderr[-3000:]}"
    return dict(zip([*SEG_VARIANTS, "sr"], json.loads(done.stdout), strict=True))
