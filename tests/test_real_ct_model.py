"""The shipped real-CT model: compact, documented, served by default, and checked on real
patients' CT (the shared COVID-CT-MD studies, when this machine has them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.client.client import SegmentationClient
from service.core.loopback import free_port
from service.core.manifest import read_model_manifest
from service.serving.shipped_model import SHIPPED_MODEL, shipped_model_path

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO.parent / "shared" / "data" / "covid-ct-md"
MAX_MODEL_BYTES = 25 * 1024 * 1024


def test_the_shipped_model_is_compact_and_says_what_it_is() -> None:
    assert SHIPPED_MODEL.is_file(), f"{SHIPPED_MODEL} is missing from the checkout"
    assert SHIPPED_MODEL.stat().st_size <= MAX_MODEL_BYTES
    manifest = read_model_manifest(shipped_model_path())
    assert [c.name for c in manifest.classes] == ["background", "lung", "ggo", "consolidation"]
    summary = manifest.training_summary
    # One intensity contract: the graph windows HU exactly as the training slices were shown.
    assert list(manifest.hu_window) == summary["source_pixel_window_hu"]
    assert "Research use only" in summary["intended_use"]
    assert "non-commercial" in summary["data_licence"]
    readme = (REPO / "models" / "README.md").read_text()
    for needle in (
        "pulmoseg train --config training/configs/real_ct_2.yaml",
        "non-commercial",
        "research use",
        manifest.name,
    ):
        assert needle.lower() in readme.lower(), needle


def test_serve_without_a_model_serves_the_shipped_one(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "PULMOSEG_MODEL_PATH"}
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
            + ["--metrics-port", str(metrics_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,  # not the repository: the default must not depend on the cwd
        )
    try:
        with SegmentationClient(f"127.0.0.1:{port}", timeout_s=30) as client:
            client.wait_until_serving(timeout_s=120)
            info = client.model_info()
        assert info["name"] == read_model_manifest(SHIPPED_MODEL).name
    finally:
        server.terminate()
        server.wait(timeout=30)


needs_studies = pytest.mark.skipif(
    not (STUDIES / "studies").is_dir(),
    reason=f"real CT studies not on this machine ({STUDIES}); they live in ../shared/data",
)


@pytest.fixture(scope="module")
def real_study_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shared studies through ``pulmoseg serve`` + ``pulmoseg segment`` (the bench)."""
    out = tmp_path_factory.mktemp("real_ct") / "eval"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "real_ct_studies.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    return {"studies": results, "detection": json.loads((out / "detection.json").read_text())}


@needs_studies
def test_real_studies_are_segmented_into_valid_segs_with_sane_lungs(
    real_study_results: dict,
) -> None:
    """Anonymised real studies (UUID-form UIDs, empty SOP Instance UIDs) go through, every SEG
    is dciodvfy-clean, and the lung field is the lung: 2.5-8 L and close to the classical one."""
    studies = real_study_results["studies"]
    assert len(studies) == len(list((STUDIES / "studies").iterdir()))
    for study in studies:
        assert study["dciodvfy_errors"] == 0, study["name"]
        assert 2.5 <= study["lung_l"] <= 8.0, (study["name"], study["lung_l"])
        assert study["lung_field_dice"] >= 0.9, (study["name"], study["lung_field_dice"])


@needs_studies
def test_the_normal_study_shows_under_one_percent_lesion(real_study_results: dict) -> None:
    normal = [s for s in real_study_results["studies"] if s["labels"][0] < 0]
    assert normal, "the shared data holds a normal study"
    assert all(s["involvement_percent"] < 1.0 for s in normal), normal


@needs_studies
def test_real_studies_meet_the_detection_targets(real_study_results: dict) -> None:
    """Model 2.0.0 learned these studies' slice labels (weak loss), so these are training-set
    figures: a check that the shipped file is the model documented, not a generalisation
    claim (the leave-study-out figures are in docs/results.md, bench/real_ct_loso.py)."""
    pooled = real_study_results["detection"]
    assert pooled["label_order"] == "descending"  # head first, the settled default
    assert pooled["min_area_mm2"] == 50.0  # the rule fixed in advance
    assert pooled["sensitivity"] >= 0.85 and pooled["specificity"] >= 0.85, pooled


def test_an_installation_without_the_shipped_model_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import service.serving.shipped_model as shipped

    monkeypatch.setattr(shipped, "SHIPPED_MODEL", tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="pass --model MODEL.onnx or set PULMOSEG_MODEL_PATH"):
        shipped.shipped_model_path()
