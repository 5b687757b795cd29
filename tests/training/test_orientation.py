"""Training (NIfTI) and serving (DICOM) must see the same voxel at the same array index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.dicom.study_input import load_instances_from_dir, select_ct_series
from service.dicom.volume import series_to_volume
from training.data.volumes import load_nifti_zyx


def test_nifti_training_arrays_match_dicom_service_volume(phantom_dataset: Path) -> None:
    study = json.loads((phantom_dataset / "manifest.json").read_text())["studies"][0]
    nifti_hu, nifti_spacing = load_nifti_zyx(phantom_dataset / study["image"])
    volume = series_to_volume(
        select_ct_series(load_instances_from_dir(phantom_dataset / study["dicom"]))
    )
    assert volume.hu.shape == nifti_hu.shape
    np.testing.assert_array_equal(volume.hu, nifti_hu.astype(np.float32))
    np.testing.assert_allclose(volume.spacing_zyx, nifti_spacing, rtol=1e-5)
