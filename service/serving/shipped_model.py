"""The model ``pulmoseg serve`` serves when none is given: the committed real-CT model.

``models/pulmoseg-real-ct.onnx`` (lung, GGO and consolidation on chest CT in HU; research use,
see ``models/README.md``) lives beside the ``service`` package in a source checkout. An
installed wheel or image carries no model; there ``--model`` or ``PULMOSEG_MODEL_PATH`` names
one, and the error says so.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_MODEL_NAME = "pulmoseg-real-ct.onnx"
#: Where a source checkout keeps the shipped model.
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / SHIPPED_MODEL_NAME


def shipped_model_path() -> Path:
    """The shipped model's path; a clear error where this installation has none."""
    if not SHIPPED_MODEL.is_file():
        raise ValueError(
            "No model given and no shipped model in this installation (looked for "
            f"'{SHIPPED_MODEL}'): pass --model MODEL.onnx or set PULMOSEG_MODEL_PATH."
        )
    return SHIPPED_MODEL
