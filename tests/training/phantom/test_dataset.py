"""A phantom data set on disk: manifest, reproducibility, DICOM/NIfTI content and conformance."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from service.core.classes import DEFAULT_CLASS_NAMES
from tests.dicom_validation import dciodvfy_errors
from training.phantom import (
    GGO,
    LUNG,
    LesionMix,
    generate_dataset,
    is_lesion_free,
    read_phantom_manifest,
    study_seed,
)

SIZE, SLICES = 64, 16
DATASET_SEED = 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small studies, half labeled, half lesion-free."""
    out = tmp_path_factory.mktemp("phantom")
    return generate_dataset(
        out,
        4,
        DATASET_SEED,
        size=SIZE,
        slices=SLICES,
        labeled_fraction=0.5,
        lesion_free_fraction=0.5,
        progress=False,
    )


def _read_series(folder: Path) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def test_manifest_content(dataset: Path) -> None:
    manifest = read_phantom_manifest(dataset)
    assert manifest["num_studies"] == 4 and len(manifest["studies"]) == 4
    assert manifest["spacing_zyx"] == pytest.approx([15.0, 5.46875, 5.46875])
    records = manifest["studies"]
    assert [r["id"] for r in records] == [f"phantom_{i:04d}" for i in range(4)]
    assert sum(r["labeled"] for r in records) == 2
    assert sum(not r["has_lesions"] for r in records) == 2
    assert manifest["lesion_mix"] == LesionMix().to_dict()
    # Label values are positions in the class catalogue, which the manifest spells out.
    assert manifest["classes"] == {str(i): name for i, name in enumerate(DEFAULT_CLASS_NAMES)}
    assert len({r["study_instance_uid"] for r in records}) == 4
    for i, r in enumerate(records):
        assert r["seed"] == study_seed(DATASET_SEED, i)
        assert r["has_lesions"] == (not is_lesion_free(DATASET_SEED, i, 0.5))
        label = np.asarray(nib.load(r["label_path"]).dataobj)
        assert r["lesion_voxels"] == {
            "ggo": int(np.count_nonzero(label == GGO)),
            "consolidation": int(np.count_nonzero(label == 3)),
        }
        assert r["lung_voxels"] == int(np.count_nonzero(label == LUNG))
        assert len(list(Path(r["dicom_path"]).glob("IM_*.dcm"))) == SLICES
        assert not Path(r["image"]).is_absolute()


def test_dataset_is_reproducible_and_extends(dataset: Path, tmp_path: Path) -> None:
    """Rerun: identical UIDs, voxels and DICOM bytes; fewer studies: a prefix of the same."""
    again = generate_dataset(
        tmp_path / "again",
        3,
        DATASET_SEED,
        size=SIZE,
        slices=SLICES,
        labeled_fraction=0.5,
        lesion_free_fraction=0.5,
        progress=False,
    )
    first = json.loads(dataset.read_text())["studies"]
    second = json.loads(again.read_text())["studies"]
    for a, b in zip(first[:3], second, strict=True):
        for key in ("study_instance_uid", "series_instance_uid", "seed", "lesion_voxels"):
            assert a[key] == b[key]
        img_a = np.asarray(nib.load(dataset.parent / a["image"]).dataobj)
        img_b = np.asarray(nib.load(again.parent / b["image"]).dataobj)
        np.testing.assert_array_equal(img_a, img_b)
    dcm = "phantom_0001/dicom/IM_0005.dcm"
    assert (dataset.parent / dcm).read_bytes() == (again.parent / dcm).read_bytes()

    other = generate_dataset(
        tmp_path / "other", 1, DATASET_SEED + 1, size=SIZE, slices=SLICES, progress=False
    )
    other_rec = json.loads(other.read_text())["studies"][0]
    assert other_rec["study_instance_uid"] != first[0]["study_instance_uid"]


def test_dciodvfy_reports_no_errors_on_every_slice(dataset: Path) -> None:
    files = sorted((dataset.parent / "phantom_0000" / "dicom").glob("*.dcm"))
    assert len(files) == SLICES
    for path in files:
        assert dciodvfy_errors(path) == [], path.name


def test_dicom_geometry_and_hu_round_trip(dataset: Path) -> None:
    record = read_phantom_manifest(dataset)["studies"][0]
    series = _read_series(Path(record["dicom_path"]))
    image = nib.load(record["image_path"])
    hu_nifti = np.transpose(np.asarray(image.dataobj), (2, 1, 0))  # back to (z, y, x)
    dz, dy, dx = record["spacing_zyx"]
    assert len({ds.SOPInstanceUID for ds in series}) == SLICES
    for k, ds in enumerate(series):
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        assert ds.StudyInstanceUID == record["study_instance_uid"]
        assert ds.SeriesInstanceUID == record["series_instance_uid"]
        assert ds.PatientName == "PHANTOM^0000"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([dy, dx])
        assert float(ds.SliceThickness) == pytest.approx(dz)
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(record["origin_lps"][2] + k * dz)
        assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
        assert ds.InstanceNumber == k + 1
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
        assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024.0, 1.0)
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, hu_nifti[k])


def test_nifti_affine_matches_dicom_positions(dataset: Path) -> None:
    record = read_phantom_manifest(dataset)["studies"][2]
    series = _read_series(Path(record["dicom_path"]))
    for path in (record["image_path"], record["label_path"]):
        affine = nib.load(path).affine
        nx, ny, nz = nib.load(path).shape
        for i, j, k in [(0, 0, 0), (nx - 1, ny - 1, nz - 1), (nx - 1, 0, nz - 1)]:
            ras = affine @ np.array([i, j, k, 1.0])
            lps_from_nifti = np.array([-ras[0], -ras[1], ras[2]])
            ds = series[k]
            ipp = np.array([float(v) for v in ds.ImagePositionPatient])
            row_dir = np.array([float(v) for v in ds.ImageOrientationPatient[:3]])
            col_dir = np.array([float(v) for v in ds.ImageOrientationPatient[3:]])
            # PixelSpacing is (between rows, between columns); column index i moves along
            # the row direction.
            row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
            lps_from_dicom = ipp + i * col_spacing * row_dir + j * row_spacing * col_dir
            np.testing.assert_allclose(lps_from_nifti, lps_from_dicom, atol=1e-3)
    hdr = nib.load(record["image_path"]).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 1)
    assert nib.load(record["label_path"]).get_data_dtype() == np.uint8
    assert nib.load(record["image_path"]).get_data_dtype() == np.int16


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"studies": 0}, ValueError, r"'studies' must be >= 1, got 0"),
        ({"labeled_fraction": 1.5}, ValueError, r"'labeled_fraction' must be in \[0, 1\]"),
        ({"lesion_free_fraction": "0.2"}, TypeError, r"'lesion_free_fraction' must be a float"),
    ],
)
def test_generate_dataset_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict, error: type, match: str
) -> None:
    args = {"studies": 1, "seed": 0, "size": SIZE, "slices": SLICES, "progress": False} | kwargs
    with pytest.raises(error, match=match):
        generate_dataset(tmp_path, **args)
    assert not (tmp_path / "manifest.json").exists()


def test_read_manifest_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match=r"is not a pulmoseg-phantom manifest"):
        read_phantom_manifest(path)
