"""Tests of the synthetic chest-CT phantom: synthesis, DICOM/NIfTI writing, manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from training import phantom
from training.phantom import (
    CONSOLIDATION,
    GGO,
    LUNG,
    is_lesion_free,
    phantom_spacing,
    study_seed,
    synthesize_study,
)
from training.phantom_io import (
    generate_dataset,
    nifti_affine,
    read_phantom_manifest,
    write_ct_series,
)

SIZE, SLICES = 64, 16
DATASET_SEED = 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small studies, half labeled, half lesion-free (through the phantom.py entry point)."""
    out = tmp_path_factory.mktemp("phantom")
    return phantom.generate_dataset(
        out,
        4,
        DATASET_SEED,
        size=SIZE,
        slices=SLICES,
        labeled_fraction=0.5,
        lesion_free_fraction=0.5,
        progress=False,
    )


@pytest.fixture(scope="module")
def studies() -> list[phantom.PhantomStudy]:
    return [synthesize_study(study_seed(3, i), SIZE, SLICES) for i in range(4)]


def _read_series(folder: Path) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


# ---- synthesis ------------------------------------------------------------------------------


def test_same_seed_gives_identical_study_and_other_seed_differs() -> None:
    a = synthesize_study(1234, SIZE, SLICES)
    b = synthesize_study(1234, SIZE, SLICES)
    c = synthesize_study(1235, SIZE, SLICES)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.lesions == b.lesions
    assert not np.array_equal(a.hu, c.hu)
    assert not np.array_equal(a.label, c.label)


def test_study_seed_depends_on_seed_and_index_only() -> None:
    assert study_seed(5, 2) == study_seed(5, 2)
    assert len({study_seed(5, i) for i in range(50)}) == 50
    assert study_seed(5, 0) != study_seed(6, 0)


def test_shapes_dtypes_and_spacing() -> None:
    s = synthesize_study(7, SIZE, SLICES)
    assert s.hu.shape == s.label.shape == s.hu_clean.shape == (SLICES, SIZE, SIZE)
    assert (s.hu.dtype, s.label.dtype, s.hu_clean.dtype) == (np.int16, np.uint8, np.float32)
    assert s.spacing_zyx == pytest.approx((15.0, 5.46875, 5.46875))
    assert phantom_spacing(128, 48) == pytest.approx((5.0, 2.734375, 2.734375))
    assert set(np.unique(s.label)) <= {0, LUNG, GGO, CONSOLIDATION}
    assert s.hu.min() >= -1024 and s.hu.max() <= 3071
    assert s.hu.max() >= 400  # bone is present


def test_hu_per_label_before_noise(studies: list[phantom.PhantomStudy]) -> None:
    pooled_cons = []
    for s in studies:
        lung_median = np.median(s.hu_clean[s.label == LUNG])
        assert abs(lung_median + 850.0) <= 60.0, lung_median
        assert np.count_nonzero(s.label == GGO) > 0
        assert -700.0 <= np.median(s.hu_clean[s.label == GGO]) <= -300.0
        pooled_cons.append(s.hu_clean[s.label == CONSOLIDATION])
        # Outside the body is air, and the noise level is what the study says it is
        # (measured away from air, where clipping at -1024 would shrink it).
        assert np.median(s.hu_clean[:, :3, :3]) == pytest.approx(-1000.0, abs=1.0)
        tissue = s.hu_clean > -900
        noise = s.hu[tissue].astype(np.float32) - s.hu_clean[tissue]
        assert noise.std() == pytest.approx(s.noise_std_hu, rel=0.1)
        assert abs(noise.mean()) < 1.0
    cons = np.concatenate(pooled_cons)
    assert cons.size > 50
    assert -100.0 <= np.median(cons) <= 50.0


def test_ggo_overlaps_vessels_in_hu(studies: list[phantom.PhantomStudy]) -> None:
    """Labels matter: some plain-lung voxels (small vessels) fall in the GGO HU range."""
    s = studies[0]
    lung_hu = s.hu_clean[s.label == LUNG]
    in_ggo_range = np.count_nonzero((lung_hu > -650) & (lung_hu < -350))
    assert in_ggo_range > 50


def test_noise_level_varies_between_studies(studies: list[phantom.PhantomStudy]) -> None:
    noise = [s.noise_std_hu for s in studies]
    assert all(10.0 <= n <= 30.0 for n in noise)
    assert max(noise) - min(noise) > 3.0


def test_lesions_only_inside_lung_field() -> None:
    with_lesions = synthesize_study(99, SIZE, SLICES)
    without = synthesize_study(99, SIZE, SLICES, with_lesions=False)
    assert with_lesions.has_lesions and not without.has_lesions
    # Same lung field; lesions are carved out of it, never added outside.
    np.testing.assert_array_equal(with_lesions.label > 0, without.label > 0)
    assert without.lesion_voxels() == {"ggo": 0, "consolidation": 0}
    # Intensity changes stay within the lung field (plus the scanner blur's reach).
    near_lung = ndimage.binary_dilation(without.label > 0, iterations=2)
    diff = np.abs(with_lesions.hu_clean - without.hu_clean)
    assert diff[~near_lung].max() < 1e-3
    assert diff[with_lesions.label >= GGO].mean() > 100.0


def test_lesion_sizes_and_counts_vary(studies: list[phantom.PhantomStudy]) -> None:
    totals = [sum(s.lesion_voxels().values()) for s in studies]
    assert len(set(totals)) == len(totals)
    assert max(totals) > 3 * min(totals)
    radii = [spec.radius_mm for s in studies for spec in s.lesions]
    assert max(radii) > 3 * min(radii)
    assert len({len(s.lesions) for s in studies}) > 1


def test_lung_and_body_shape_vary(studies: list[phantom.PhantomStudy]) -> None:
    lung_volumes = [np.count_nonzero(s.label > 0) for s in studies]
    body_areas = [np.count_nonzero(s.hu_clean[SLICES // 2] > -500) for s in studies]
    assert max(lung_volumes) > 1.15 * min(lung_volumes)
    assert max(body_areas) > 1.1 * min(body_areas)


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.25, 5), (0.5, 10), (1.0, 20)])
def test_lesion_free_fraction_is_met_in_every_prefix(fraction: float, expected: int) -> None:
    flags = [is_lesion_free(8, i, fraction) for i in range(20)]
    assert sum(flags) == expected
    for n in range(1, 21):
        assert int(np.floor(n * fraction)) <= sum(flags[:n]) <= int(np.ceil(n * fraction))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seed": -1}, ValueError, r"'seed' must be >= 0, got -1"),
        ({"seed": 1.5}, TypeError, r"'seed' must be an int, got float"),
        ({"seed": 1, "size": 16}, ValueError, r"'size' must be >= 32, got 16"),
        ({"seed": 1, "slices": True}, TypeError, r"'slices' must be an int, got bool"),
    ],
)
def test_synthesize_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        synthesize_study(**kwargs)


# ---- data set on disk -----------------------------------------------------------------------


def test_manifest_content(dataset: Path) -> None:
    manifest = read_phantom_manifest(dataset)
    assert manifest["num_studies"] == 4 and len(manifest["studies"]) == 4
    assert manifest["spacing_zyx"] == pytest.approx([15.0, 5.46875, 5.46875])
    records = manifest["studies"]
    assert [r["id"] for r in records] == [f"phantom_{i:04d}" for i in range(4)]
    assert sum(r["labeled"] for r in records) == 2
    assert sum(not r["has_lesions"] for r in records) == 2
    assert manifest["lesion_mix"] == phantom.LesionMix().to_dict()
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


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_dciodvfy_reports_no_errors_on_every_slice(dataset: Path) -> None:
    files = sorted((dataset.parent / "phantom_0000" / "dicom").glob("*.dcm"))
    assert len(files) == SLICES
    for path in files:
        assert _dciodvfy_errors(path) == [], path.name


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


def test_nifti_affine_is_lps_to_ras_flip() -> None:
    affine = nifti_affine((5.0, 2.0, 3.0), (-10.0, -20.0, -30.0))
    np.testing.assert_allclose(
        affine, [[-3, 0, 0, 10], [0, -2, 0, 20], [0, 0, 5, -30], [0, 0, 0, 1]]
    )


# ---- write_ct_series as a reusable function -------------------------------------------------


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
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(paths[1]) == []


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


def test_lesion_mix_sets_counts_and_consolidation_presence() -> None:
    mix = phantom.LesionMix(
        ggo_count=(2, 2),
        consolidation_probability=1.0,
        consolidation_count=(1, 1),
        consolidation_radius_mm=(10.0, 12.0),
    )
    studies = [
        phantom.synthesize_study(phantom.study_seed(5, i), SIZE, SLICES, lesion_mix=mix)
        for i in range(4)
    ]
    for s in studies:
        cons = [spec for spec in s.lesions if spec.kind == "consolidation"]
        assert len(cons) == 1 and 10.0 <= cons[0].radius_mm <= 12.0
        assert s.lesion_voxels()["consolidation"] > 0  # every study has some
    never = phantom.LesionMix(consolidation_probability=0.0)
    for i in range(4):
        s = phantom.synthesize_study(phantom.study_seed(5, i), SIZE, SLICES, lesion_mix=never)
        assert s.lesion_voxels()["consolidation"] == 0 and s.lesion_voxels()["ggo"] > 0
    # The default mix is the one used when none is given (same study, bit for bit).
    a = phantom.synthesize_study(77, SIZE, SLICES)
    b = phantom.synthesize_study(77, SIZE, SLICES, lesion_mix=phantom.LesionMix())
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.label, b.label)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ggo_count": (3, 1)}, r"'ggo_count' must be \(lo, hi\) with 0 <= lo <= hi"),
        ({"ggo_count": (0, 0)}, "at least one GGO lesion"),
        ({"consolidation_probability": 1.5}, "consolidation_probability"),
        ({"consolidation_radius_mm": (9.0, 9.0)}, r"'consolidation_radius_mm' must be"),
    ],
)
def test_lesion_mix_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        phantom.LesionMix(**kwargs)
