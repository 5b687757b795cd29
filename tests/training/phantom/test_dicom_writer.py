"""write_ct_series as a reusable function: storage choice, rounding, conformance, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.dicom_validation import dciodvfy_errors
from training.phantom import write_ct_series


def _read_series(folder: Path) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def test_write_ct_series_signed_storage_when_below_minus_1024(tmp_path: Path) -> None:
    hu = np.full((3, 8, 10), -2000, dtype=np.int16)
    hu[1, 2:5, 3:7] = 1500
    paths = write_ct_series(
        hu,
        (2.5, 0.8, 0.7),
        tmp_path,
        study_uid="1.2.3.4",
        series_uid="1.2.3.4.5",
        patient_name="TEST^SIGNED",
        patient_id="T-1",
        seed=3,
    )
    assert [p.name for p in paths] == ["IM_0001.dcm", "IM_0002.dcm", "IM_0003.dcm"]
    series = _read_series(tmp_path)
    for k, ds in enumerate(series):
        assert (ds.BitsStored, ds.PixelRepresentation) == (16, 1)
        assert (ds.Rows, ds.Columns) == (8, 10)
        restored = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(restored, hu[k])
    assert dciodvfy_errors(paths[1]) == []


def test_write_ct_series_rounds_float_hu(tmp_path: Path) -> None:
    hu = np.array([[[-1000.4, 12.6], [40.0, 1499.5]]], dtype=np.float32)
    (path,) = write_ct_series(
        hu,
        (5.0, 1.0, 1.0),
        tmp_path,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        patient_name="TEST^FLOAT",
        patient_id="T-2",
        seed=0,
    )
    ds = pydicom.dcmread(path)
    restored = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)
    np.testing.assert_array_equal(restored, [[-1000, 13], [40, 1500]])


@pytest.mark.parametrize(
    ("hu", "spacing", "error", "match"),
    [
        (np.zeros((2, 4, 4), bool), (1, 1, 1), TypeError, r"'hu' must hold integer or float"),
        (np.full((2, 4, 4), np.nan), (1, 1, 1), ValueError, r"'hu' must be finite"),
        (np.zeros((4, 4), np.int16), (1, 1, 1), ValueError, r"'hu' must be a non-empty 3-D"),
        (np.zeros((2, 4, 4), np.int16), (1, 0, 1), ValueError, r"'spacing_zyx' must be 3 pos"),
        (
            np.full((1, 2, 2), 70000, np.int32),
            (1, 1, 1),
            ValueError,
            r"'hu' range \[70000, 70000\] HU does not fit",
        ),
    ],
)
def test_write_ct_series_rejects_bad_input(
    tmp_path: Path, hu: np.ndarray, spacing: tuple, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        write_ct_series(
            hu,
            spacing,
            tmp_path,
            study_uid="1.2",
            series_uid="1.2.3",
            patient_name="X",
            patient_id="X",
            seed=0,
        )
