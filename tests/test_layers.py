"""The layer rules hold: contracts (import-linter), types (mypy), and a serve-only runtime.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); ``docs/architecture.md``
explains them. The serve-only test runs the real MONAI Deploy app on a real study in a process
where torch, the training package and MONAI core cannot be imported, as in ``pulmoseg[serve]``.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pydicom
import pytest

import service
from tests.import_blocking import (
    SERVE_ONLY_BLOCKED,
    blocking_prelude,
    run_app_without,
    run_python,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED = {"service.core", "service.predictor"}


def _run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_import_contracts_hold() -> None:
    run = _run([str(BIN / "lint-imports"), "--no-cache"])
    assert run.returncode == 0, run.stdout + run.stderr


def test_training_contract_lists_every_outer_service_package() -> None:
    """A new service package is forbidden to training until someone decides otherwise."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [
        c for c in config["contracts"] if c["name"].startswith("training uses only the shared")
    ]
    modules = {f"service.{m.name}" for m in pkgutil.iter_modules(service.__path__)}
    assert set(contract["forbidden_modules"]) == modules - SHARED


def test_mypy_is_clean_on_service_and_training() -> None:
    run = _run([sys.executable, "-m", "mypy"], timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_the_service_runs_without_torch_training_or_monai_core(
    exported_model: Path, held_out_study, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = run_app_without(
        SERVE_ONLY_BLOCKED,
        "serve-only",
        held_out_study.dicom_dir,
        out,
        exported_model,
        extra="import service.serving.server, service.serving.servicer, service.client.client",
    )
    assert run.returncode == 0 and "BLOCKED-RUN OK" in run.stdout, run.stdout + run.stderr
    seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) >= 1


def test_the_block_in_the_serve_only_test_really_blocks() -> None:
    """Guard against a prelude that blocks nothing (the test above would then prove nothing)."""
    run = run_python(blocking_prelude(SERVE_ONLY_BLOCKED, "serve-only") + "import torch\n", 120)
    assert run.returncode != 0 and "serve-only" in run.stderr


@pytest.mark.parametrize("extra", ["serve", "train"])
def test_extras_split_serving_from_training(extra: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = " ".join(project["dependencies"] + project["optional-dependencies"][extra])
    if extra == "serve":
        for heavy in ("torch", "monai>", "nibabel", "tensorboard", "onnxscript"):
            assert heavy not in requirements
    if extra == "train":
        assert "torch" in requirements
    scripts = project["entry-points"]["pulmoseg.commands"]
    assert all(target.startswith("training.") for target in scripts.values())
