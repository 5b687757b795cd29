"""Reading uploads and folders, and choosing the CT series, on real DICOM files."""

from __future__ import annotations

import io
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from service.core.errors import InvalidStudyError
from service.dicom.study_input import (
    StudySource,
    load_instances_from_dir,
    load_study,
    parse_instance,
    parse_instances,
    read_study_folder,
    read_uploaded_study,
    select_ct_series,
)
from training.phantom import write_ct_series

SPACING = (2.5, 0.75, 0.8)


def make_series(
    out_dir: Path, n_slices: int = 4, *, study_uid: str | None = None, seed: int = 0
) -> list[Path]:
    writer = write_ct_series
    hu = np.random.default_rng(seed).integers(-1000, 400, (n_slices, 16, 16)).astype(np.float32)
    return writer(
        hu,
        SPACING,
        out_dir,
        study_uid=study_uid or generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Input",
        patient_id="PI0001",
        seed=seed,
    )


def renumbered(datasets: list[pydicom.Dataset], *, series_number: int) -> list[pydicom.Dataset]:
    """Copies of ``datasets`` as another series of the same study."""
    series_uid = generate_uid()
    copies = []
    for ds in datasets:
        copy = pydicom.dcmread(io.BytesIO(_to_bytes(ds)))
        copy.SeriesInstanceUID, copy.SOPInstanceUID = series_uid, generate_uid()
        copy.SeriesNumber = series_number
        copies.append(copy)
    return copies


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def ct_paths(tmp_path) -> list[Path]:
    return make_series(tmp_path / "study")


# --- parse_instance -------------------------------------------------------------------------


def test_parse_instance_reads_part10_bytes(ct_paths):
    ds = parse_instance(ct_paths[0].read_bytes(), name="0000.dcm")
    assert ds.Modality == "CT"
    assert ds.pixel_array.shape == (16, 16)


def test_a_parsed_instance_does_not_hold_on_to_the_uploaded_file(ct_paths):
    blob = ct_paths[0].read_bytes()
    ds = parse_instance(blob, name="0000.dcm")
    # pydicom would keep the whole file (a second copy of the pixels) as the dataset's buffer.
    assert getattr(ds, "buffer", None) is None
    assert ds.pixel_array.shape == (16, 16)  # everything was read: nothing deferred is lost


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_parse_instance_accepts_raw_dataset_without_preamble_or_meta(implicit):
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    bare = pydicom.Dataset()
    bare.update(source)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, bare, implicit_vr=implicit, little_endian=True)
    assert buffer.getvalue()[128:132] != b"DICM"
    ds = parse_instance(buffer.getvalue(), name="raw")
    np.testing.assert_array_equal(ds.pixel_array, source.pixel_array)


@pytest.mark.parametrize(
    "blob",
    [b"hello world", b"\x89PNG\r\n\x1a\n" + bytes(300), bytes(range(256)) * 8, b"DICM" * 3],
    ids=["text", "png", "binary", "marker-only"],
)
def test_parse_instance_rejects_non_dicom(blob):
    with pytest.raises(InvalidStudyError, match=r"Instance 'upload-7' is not DICOM"):
        parse_instance(blob, name="upload-7")


def test_parse_instance_rejects_empty_and_wrong_type():
    with pytest.raises(InvalidStudyError, match=r"Instance 'x' is empty \(0 bytes\)"):
        parse_instance(b"", name="x")
    with pytest.raises(TypeError, match="'blob' of instance 'x' must be bytes, got str"):
        parse_instance("not bytes", name="x")  # type: ignore[arg-type]


def test_parse_instance_keeps_compressed_pixels_encoded():
    blob = Path(get_testdata_file("MR_small_jp2klossless.dcm")).read_bytes()
    ds = parse_instance(blob, name="j2k")
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg decodes JPEG 2000")
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(ds.pixel_array, reference)


# --- load_instances_from_dir ----------------------------------------------------------------


def test_load_dir_reads_files_without_suffix_and_nested(tmp_path, ct_paths):
    root = ct_paths[0].parent
    (root / "sub").mkdir()
    ct_paths[0].rename(root / "IM00001")
    ct_paths[1].rename(root / "sub" / "IM00002.img")
    (root / "DICOMDIR").write_bytes(b"index that is not an image")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    study = read_study_folder(root)
    assert len(study.datasets) == 4
    assert {ds.InstanceNumber for ds in study.datasets} == {1, 2, 3, 4}
    assert [(s.path, s.reason) for s in study.skipped] == [
        (".DS_Store", "hidden"),
        ("DICOMDIR", "DICOMDIR index"),
    ]
    assert len(load_instances_from_dir(root)) == 4


def test_load_dir_skips_and_lists_the_non_dicom_files(ct_paths):
    root = ct_paths[0].parent
    (root / "notes.txt").write_text("scan notes")
    (root / "b.pdf").write_bytes(b"%PDF-1.4\n" + bytes(500))
    study = read_study_folder(root)
    assert len(study.datasets) == 4
    assert [(s.path, s.reason) for s in study.skipped] == [
        ("b.pdf", "not DICOM"),
        ("notes.txt", "not DICOM"),
    ]


def test_load_dir_still_fails_on_damaged_dicom_naming_the_file(ct_paths):
    """Skipping a damaged slice would change the volume: damaged DICOM is not "not DICOM"."""
    root = ct_paths[0].parent
    data = ct_paths[2].read_bytes()
    syntax = data.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID, explicit VR
    ct_paths[2].write_bytes(data[: syntax + 4] + b"ZZ" + data[syntax + 6 :])
    with pytest.raises(
        InvalidStudyError, match=r"Instance 'IM_0003.dcm' is not a readable DICOM file .*'ZZ'"
    ):
        load_instances_from_dir(root)


def test_load_dir_rejects_empty_and_missing_folders(tmp_path):
    with pytest.raises(InvalidStudyError, match=r"holds no DICOM instances\.$"):
        load_instances_from_dir(tmp_path)
    (tmp_path / "README").write_text("exported on Monday")
    with pytest.raises(
        InvalidStudyError, match=r"holds no DICOM instances; skipped 1 item: README \(not DICOM\)"
    ):
        load_instances_from_dir(tmp_path)
    with pytest.raises(InvalidStudyError, match="does not exist or is not a folder"):
        load_instances_from_dir(tmp_path / "nope")


# --- select_ct_series -----------------------------------------------------------------------


def test_select_picks_the_largest_ct_series_and_ignores_localizers(tmp_path):
    study = generate_uid()
    small = [pydicom.dcmread(p) for p in make_series(tmp_path / "a", 3, study_uid=study, seed=1)]
    large = [pydicom.dcmread(p) for p in make_series(tmp_path / "b", 5, study_uid=study, seed=2)]
    scouts = renumbered(small + small[:3], series_number=99)
    for ds in scouts:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    # A localizer inside the chosen series is dropped as well.
    inner_scout = renumbered(large[:1], series_number=1)[0]
    inner_scout.SeriesInstanceUID = large[0].SeriesInstanceUID
    inner_scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    chosen = select_ct_series(scouts + small + [inner_scout] + large)
    assert [ds.SOPInstanceUID for ds in chosen] == [ds.SOPInstanceUID for ds in large]


def test_select_breaks_ties_by_series_number_whatever_the_order(ct_paths):
    first = [pydicom.dcmread(p) for p in ct_paths]
    second = renumbered(first, series_number=7)
    for ds in first:
        ds.SeriesNumber = 3
    assert select_ct_series(second + first)[0].SeriesNumber == 3
    assert select_ct_series(first + second)[0].SeriesNumber == 3


def test_select_tolerates_empty_sop_class_uid(ct_paths):
    datasets = [pydicom.dcmread(p) for p in ct_paths]
    datasets[0].SOPClassUID = ""
    del datasets[1].SOPClassUID
    assert len(select_ct_series(datasets)) == 4


def test_select_ignores_non_image_objects(ct_paths):
    datasets = [pydicom.dcmread(p) for p in ct_paths]
    dose = renumbered(datasets[:1], series_number=999)[0]
    del dose.PixelData
    assert len(select_ct_series([dose, *datasets])) == 4


def test_select_rejects_mr_study(tmp_path, ct_paths):
    datasets = [pydicom.dcmread(p) for p in ct_paths]
    for ds in datasets:
        ds.Modality = "MR"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    with pytest.raises(
        InvalidStudyError,
        match=r"^No CT series in the study: found MR \(4 instances\)\. "
        r"pulmoseg segments CT only\.$",
    ):
        select_ct_series(datasets)


def test_select_rejects_localizer_only_ct(ct_paths):
    datasets = [pydicom.dcmread(p) for p in ct_paths]
    for ds in datasets:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    with pytest.raises(
        InvalidStudyError,
        match=r"4 CT instances but no single-frame CT image.*"
        r"4 localizer",
    ):
        select_ct_series(datasets)


def test_select_rejects_two_studies(tmp_path):
    a = [pydicom.dcmread(p) for p in make_series(tmp_path / "a", 2, seed=1)]
    b = [pydicom.dcmread(p) for p in make_series(tmp_path / "b", 2, seed=2)]
    with pytest.raises(InvalidStudyError, match="Instances from 2 studies were sent"):
        select_ct_series(a + b)


def test_select_rejects_empty_and_wrong_types():
    with pytest.raises(InvalidStudyError, match="holds no instances"):
        select_ct_series([])
    with pytest.raises(TypeError, match="'datasets' item 0 must be a pydicom Dataset, got bytes"):
        select_ct_series([b"DICM"])  # type: ignore[list-item]


def test_parse_instances_reports_progress_to_one(tmp_path):
    blobs = [p.read_bytes() for p in make_series(tmp_path / "s", 40)]
    fractions: list[float] = []
    datasets = parse_instances(blobs, on_progress=fractions.append)
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, 41))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 3


def test_parse_instances_stops_when_cancelled_and_skips_non_dicom_instances(tmp_path):
    blobs = [p.read_bytes() for p in make_series(tmp_path / "s", 2)]
    with pytest.raises(CancelledError):
        parse_instances(blobs, is_cancelled=lambda: True)
    study = read_uploaded_study([*blobs, b"not dicom at all", b""])
    assert len(study.datasets) == 2
    assert [(s.path, s.reason) for s in study.skipped] == [
        ("instance #2", "not DICOM"),
        ("instance #3", "not DICOM"),
    ]
    with pytest.raises(
        InvalidStudyError,
        match=r"The upload holds no DICOM instances; skipped 1 item: instance #0 \(not DICOM\)",
    ):
        parse_instances([b"not dicom at all"])
    with pytest.raises(InvalidStudyError, match="No DICOM instances were sent"):
        parse_instances([])


def test_study_source_from_bytes_or_folder(tmp_path):
    paths = make_series(tmp_path / "s", 3)
    from_folder = load_study(StudySource.from_folder(tmp_path / "s")).datasets
    from_bytes = load_study(StudySource.from_bytes([p.read_bytes() for p in paths])).datasets
    uids = sorted(ds.SOPInstanceUID for ds in from_folder)
    assert sorted(ds.SOPInstanceUID for ds in from_bytes) == uids
    with pytest.raises(ValueError, match="exactly one of 'instances' or 'folder', got both"):
        StudySource(instances=[b"x"], folder=tmp_path)
    with pytest.raises(ValueError, match="got neither"):
        StudySource()
    with pytest.raises(TypeError, match="'source' must be a StudySource, got str"):
        load_study(str(tmp_path))  # type: ignore[arg-type]
