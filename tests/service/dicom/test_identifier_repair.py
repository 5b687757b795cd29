"""Broken UIDs from real anonymisers (UUID strings, empty SOP Instance and Frame of Reference
UIDs, as in COVID-CT-MD) are replaced reproducibly, and such a study yields a valid SEG."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pydicom
import pytest

from service.app.study_runner import StudyRunner
from service.dicom.identifier_repair import repair_identifiers, uuid_as_uid
from service.dicom.seg_reader import read_seg_labels
from service.dicom.study_input import load_instances_from_dir, select_ct_series
from service.dicom.volume import series_to_volume
from tests.dicom_validation import dciodvfy_errors
from tests.service.dicom.test_study_input import make_series


def _anonymised_like_covid_ct_md(tmp_path, n_slices: int = 5):
    """A series whose Study/Series UIDs are UUID strings and SOP/Frame UIDs empty."""
    paths = make_series(tmp_path / "src", n_slices)
    study, series = str(uuid.uuid4()), str(uuid.uuid4())
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ""
        ds.file_meta.MediaStorageSOPInstanceUID = ""
        ds.FrameOfReferenceUID = ""
        ds.save_as(path)
    return paths, study, series


def test_uuid_strings_map_to_the_standard_2_25_form() -> None:
    value = "896911bf-1143-4c8d-8f04-f3cd1a7f6204"
    assert uuid_as_uid(value) == f"2.25.{uuid.UUID(value).int}"
    assert uuid_as_uid("1.2.3") is None and uuid_as_uid("") is None


def test_repairs_are_valid_reproducible_and_distinct(tmp_path) -> None:
    paths, study, series = _anonymised_like_covid_ct_md(tmp_path)
    repaired = repair_identifiers([pydicom.dcmread(p) for p in paths])
    counts = repaired.counts
    assert counts["StudyInstanceUID (UUID form)"] == len(paths)
    assert counts["SOPInstanceUID (empty)"] == len(paths)
    assert counts["FrameOfReferenceUID (empty)"] == len(paths)
    first = repaired.datasets
    second = repair_identifiers([pydicom.dcmread(p) for p in reversed(paths)]).datasets
    assert {ds.StudyInstanceUID for ds in first} == {uuid_as_uid(study)}
    assert {ds.SeriesInstanceUID for ds in first} == {uuid_as_uid(series)}
    assert len({ds.FrameOfReferenceUID for ds in first}) == 1
    sops = [ds.SOPInstanceUID for ds in first]
    assert len(set(sops)) == len(sops)  # one per slice
    # Upload order does not matter: the same files get the same UIDs.
    assert sorted(sops) == sorted(ds.SOPInstanceUID for ds in second)
    for ds in first:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for keyword in ("StudyInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            value = str(ds[keyword].value)
            assert len(value) <= 64 and all(p.isdigit() for p in value.split("."))


def test_valid_uids_are_never_touched(tmp_path) -> None:
    paths = make_series(tmp_path / "ok", 3)
    datasets = [pydicom.dcmread(p) for p in paths]
    before = [(ds.StudyInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID) for ds in datasets]
    repaired = repair_identifiers(datasets)
    assert not repaired.counts
    assert all(a is b for a, b in zip(repaired.datasets, datasets, strict=True))  # not copied
    assert before == [
        (ds.StudyInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID) for ds in datasets
    ]


def test_repair_returns_copies_and_leaves_the_callers_datasets_as_received(tmp_path) -> None:
    """The PACS worker keeps its spooled headers: selecting a series must not rewrite them."""
    paths, study, _ = _anonymised_like_covid_ct_md(tmp_path)
    datasets = [pydicom.dcmread(p) for p in paths]
    received = [ds.to_json() for ds in datasets]
    series = select_ct_series(datasets)
    assert {ds.StudyInstanceUID for ds in series} == {uuid_as_uid(study)}
    assert all(ds.SOPInstanceUID for ds in series)
    for ds in series:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    for ds, as_json in zip(datasets, received, strict=True):
        assert ds.to_json() == as_json
        assert ds.StudyInstanceUID == study and ds.SOPInstanceUID == ""
        assert ds.file_meta.MediaStorageSOPInstanceUID == ""
    # The copies share what they do not change: no second copy of the pixels.
    by_instance = {int(ds.InstanceNumber): ds for ds in datasets}
    for copy in series:
        original = by_instance[int(copy.InstanceNumber)]
        assert copy is not original
        assert copy["PixelData"] is original["PixelData"]
        assert copy.filename == original.filename


def test_empty_study_uid_is_still_refused_by_name(tmp_path) -> None:
    paths = make_series(tmp_path / "nostudy", 3)
    datasets = [pydicom.dcmread(p) for p in paths]
    datasets[1].StudyInstanceUID = ""
    with pytest.raises(Exception, match=r"StudyInstanceUID \(0020,000D\)"):
        select_ct_series(datasets)


def test_such_a_study_is_segmented_into_a_valid_seg(tmp_path, exported_model) -> None:
    paths, _, _ = _anonymised_like_covid_ct_md(tmp_path, n_slices=6)
    result = StudyRunner.load(exported_model).segment([p.read_bytes() for p in paths])
    seg_path = tmp_path / "seg.dcm"
    seg_path.write_bytes(result.seg_bytes)
    assert dciodvfy_errors(seg_path) == []
    volume = series_to_volume(select_ct_series(load_instances_from_dir(tmp_path / "src")))
    labels = read_seg_labels(result.seg_bytes, [str(ds.SOPInstanceUID) for ds in volume.datasets])
    assert labels.shape == volume.hu.shape
    assert np.array_equal(labels, result.labels)
    seg = pydicom.dcmread(io.BytesIO(result.seg_bytes))
    assert seg.FrameOfReferenceUID == volume.datasets[0].FrameOfReferenceUID
