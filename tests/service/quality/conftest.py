"""A small CT series on disk, its volume and a coded manifest, shared by the quality tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from service.core.classes import DEFAULT_CLASSES
from service.core.manifest import ModelManifest
from service.dicom.volume import CTVolume, series_to_volume
from training.phantom import write_ct_series

SPACING = (2.5, 0.75, 0.8)
SHAPE = (8, 32, 36)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory) -> list[pydicom.Dataset]:
    hu = np.random.default_rng(0).integers(-1000, 400, SHAPE).astype(np.float32)
    paths = write_ct_series(
        hu,
        SPACING,
        tmp_path_factory.mktemp("quality_ct"),
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Quality",
        patient_id="PQ0001",
        seed=0,
    )
    return [pydicom.dcmread(p) for p in paths]


@pytest.fixture(scope="session")
def ct_volume(ct_series) -> CTVolume:
    return series_to_volume(list(reversed(ct_series)))


@pytest.fixture(scope="session")
def manifest() -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-test-net",
        version="1.2.0",
        classes=list(DEFAULT_CLASSES),
        slice_context=3,
        hu_window=(-1000.0, 200.0),
        input_size=(32, 36),
    )


def study_labels(shape=SHAPE) -> np.ndarray:
    """Lung on slices 1-6 with GGO on 2-4 and consolidation on 3-5, each a box."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[1:7, 4:28, 3:32] = 1
    labels[2:5, 8:16, 6:18] = 2
    labels[3:6, 18:24, 20:28] = 3
    return labels


@pytest.fixture(scope="session")
def hu_model(tmp_path_factory) -> Path:
    """The tiny HU-threshold ONNX model, for 64×64 studies (see ``hu_model.py``)."""
    from hu_model import write_hu_model

    return write_hu_model(tmp_path_factory.mktemp("hu_model") / "model.onnx", 64)
