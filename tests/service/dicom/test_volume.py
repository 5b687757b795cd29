"""series_to_volume on real DICOM files: ordering, HU scaling, geometry checks, compression."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, RLELossless, generate_uid

from service.core.errors import InvalidStudyError
from service.dicom.study_input import parse_instance
from service.dicom.volume import series_to_volume
from training.phantom import write_ct_series

SPACING = (2.5, 0.75, 0.8)


def make_series(out_dir: Path, hu: np.ndarray, spacing=SPACING, *, seed: int = 0) -> list[Path]:
    writer = write_ct_series
    return writer(
        hu,
        spacing,
        out_dir,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Volume",
        patient_id="PV0001",
        seed=seed,
    )


def random_hu(shape=(6, 32, 36), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 400, size=shape).astype(np.float32)


def read_all(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


@pytest.fixture
def series(tmp_path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    hu = random_hu()
    return hu, read_all(make_series(tmp_path / "ct", hu))


def test_shuffled_series_sorts_by_position_and_restores_hu(series):
    hu, datasets = series
    rng = np.random.default_rng(3)
    shuffled = [datasets[i] for i in rng.permutation(len(datasets))]
    # InstanceNumber must not drive ordering: scramble it too.
    for ds, number in zip(shuffled, [5, 1, 6, 2, 4, 3], strict=True):
        ds.InstanceNumber = number
    volume = series_to_volume(shuffled)
    assert volume.hu.dtype == np.float32
    assert volume.shape == hu.shape
    np.testing.assert_allclose(volume.hu, hu, atol=0.5)
    assert volume.spacing_zyx == pytest.approx(SPACING)
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.datasets]
    assert z == sorted(z)
    np.testing.assert_allclose(volume.origin, datasets[0].ImagePositionPatient)
    np.testing.assert_allclose(volume.slice_normal, [0, 0, 1])
    # The affine maps voxel (k, r, c) to the DICOM position of that pixel.
    voxel = np.array([3, 2, 5, 1.0])
    expected = np.asarray(volume.datasets[3].ImagePositionPatient, float) + [5 * 0.8, 2 * 0.75, 0]
    np.testing.assert_allclose((volume.affine @ voxel)[:3], expected)


def test_rescale_slope_and_unsigned_pixel_representation(series):
    _, datasets = series
    stored = np.arange(32 * 36, dtype=np.uint16).reshape(32, 36) * 7
    for ds in datasets:
        ds.PixelRepresentation = 0
        ds.BitsStored, ds.HighBit = 16, 15  # stored values use all 16 bits
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -1000
        ds.PixelData = stored.tobytes()
    volume = series_to_volume(datasets)
    np.testing.assert_allclose(volume.hu[2], stored * 0.5 - 1000)


def test_oblique_but_consistent_stack_is_accepted(series):
    _, datasets = series
    theta = np.radians(20)
    col = [0.0, np.cos(theta), np.sin(theta)]
    normal = np.cross([1.0, 0, 0], col)
    for k, ds in enumerate(datasets):
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, *col]
        ds.ImagePositionPatient = list(np.array([-100.0, -120.0, 10.0]) + k * 2.5 * normal)
    volume = series_to_volume(list(reversed(datasets)))
    assert volume.spacing_zyx[0] == pytest.approx(2.5)
    np.testing.assert_allclose(volume.slice_normal, normal)
    assert volume.datasets[0] is datasets[0]


def test_gantry_tilt_shear_is_rejected(series):
    _, datasets = series
    theta = np.radians(15)
    for ds in datasets:
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, np.cos(theta), np.sin(theta)]
    with pytest.raises(InvalidStudyError, match=r"about 15.0 degrees of gantry tilt"):
        series_to_volume(datasets)


def test_missing_image_position_is_named(series):
    _, datasets = series
    del datasets[2].ImagePositionPatient
    with pytest.raises(InvalidStudyError, match=r"#2 \('IM_0003.dcm'\) lacks ImagePositionPatient"):
        series_to_volume(datasets)


def test_errors_name_instances_loaded_from_bytes(series):
    _, datasets = series
    blobs = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        blobs.append(buffer.getvalue())
    parsed = [parse_instance(b, name=f"upload-{i}") for i, b in enumerate(blobs)]
    del parsed[3].PixelSpacing
    with pytest.raises(InvalidStudyError, match=r"#3 \('upload-3'\) lacks PixelSpacing"):
        series_to_volume(parsed)


def test_missing_frame_of_reference_is_named(series):
    _, datasets = series
    del datasets[1].FrameOfReferenceUID
    with pytest.raises(InvalidStudyError, match=r"lacks FrameOfReferenceUID \(0020,0052\)"):
        series_to_volume(datasets)


def test_duplicate_positions_are_rejected(series):
    _, datasets = series
    datasets[4].ImagePositionPatient = list(datasets[3].ImagePositionPatient)
    with pytest.raises(InvalidStudyError, match="lie at the same slice position"):
        series_to_volume(datasets)


def test_missing_slice_reports_measured_gaps(series):
    _, datasets = series
    with pytest.raises(InvalidStudyError, match=r"gaps 2.5 mm \(3x\), 5 mm \(1x\)"):
        series_to_volume(datasets[:2] + datasets[3:])


def test_inconsistent_pixel_spacing_is_rejected(series):
    _, datasets = series
    datasets[3].PixelSpacing = [0.9, 0.8]
    with pytest.raises(InvalidStudyError, match="disagree on PixelSpacing"):
        series_to_volume(datasets)


def test_inconsistent_orientation_is_rejected(series):
    _, datasets = series
    datasets[1].ImageOrientationPatient = [1, 0, 0, 0, 0.99, 0.14106736]
    with pytest.raises(InvalidStudyError, match="disagree on ImageOrientationPatient"):
        series_to_volume(datasets)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless], ids=["j2k", "rle"])
def test_compressed_series_decodes_to_the_same_hu(series, syntax):
    hu, datasets = series
    if syntax == JPEG2000Lossless:
        pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg provides the J2K codec")
    compressed = []
    for ds in datasets:
        ds.compress(syntax)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        compressed.append(pydicom.dcmread(io.BytesIO(buffer.getvalue())))
    assert compressed[0].file_meta.TransferSyntaxUID == syntax
    volume = series_to_volume(compressed)
    np.testing.assert_allclose(volume.hu, hu, atol=0.5)


def test_bundled_ct_small_single_slice():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    volume = series_to_volume([ds])
    assert volume.shape == (1, 128, 128)
    assert volume.spacing_zyx == pytest.approx((5.0, 0.661468, 0.661468))
    np.testing.assert_allclose(volume.hu[0], ds.pixel_array * 1.0 - 1024)


def test_missing_decoder_names_transfer_syntax(series):
    _, datasets = series
    ds = datasets[0]
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    with pytest.raises(
        InvalidStudyError,
        match=r"transfer syntax 'MPEG2 Main Profile / Main Level'.*"
        r"decoder plugin",
    ):
        series_to_volume([ds])


def _compressed_copies(datasets, syntax=RLELossless) -> list[pydicom.Dataset]:
    out = []
    for ds in datasets:
        ds.compress(syntax)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(pydicom.dcmread(io.BytesIO(buffer.getvalue())))
    return out


@pytest.fixture
def compressed_series(tmp_path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    hu = random_hu(shape=(20, 24, 28), seed=5)
    return hu, _compressed_copies(read_all(make_series(tmp_path / "ct", hu)))


def test_parallel_decoding_builds_the_same_volume(compressed_series):
    hu, datasets = compressed_series
    rng = np.random.default_rng(1)
    shuffled = [datasets[i] for i in rng.permutation(len(datasets))]
    serial = series_to_volume(shuffled, decode_workers=0)
    parallel = series_to_volume(shuffled, decode_workers=2)
    np.testing.assert_array_equal(parallel.hu, serial.hu)
    np.testing.assert_allclose(parallel.hu, hu, atol=0.5)
    assert [ds.SOPInstanceUID for ds in parallel.datasets] == [
        ds.SOPInstanceUID for ds in serial.datasets
    ]


def test_parallel_decoding_names_the_slice_that_fails(compressed_series):
    _, datasets = compressed_series
    broken = datasets[7]
    broken.PixelData = encapsulate([b"\x00" * 16])  # not an RLE frame
    broken.filename = "broken.dcm"
    with pytest.raises(InvalidStudyError, match=r"broken\.dcm"):
        series_to_volume(datasets, decode_workers=2)


def test_decoding_processes_only_for_large_compressed_series(series, compressed_series):
    from service.dicom.volume import MIN_SLICES_FOR_WORKERS, default_decode_workers, usable_cpus

    _, plain = series
    _, compressed = compressed_series
    assert default_decode_workers(plain) == 0  # uncompressed: a copy, nothing to share out
    assert default_decode_workers(compressed[: MIN_SLICES_FOR_WORKERS - 1]) == 0
    expected = 0 if usable_cpus() < 2 else min(usable_cpus(), 4)
    assert default_decode_workers(compressed) == expected
