"""Source series that highdicom cannot turn into a SEG: InvalidStudyError naming the attribute.

Real CT files (the phantom writer), real highdicom; each case used to end as a bare ValueError
or AttributeError, i.e. an INTERNAL error for the client.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from service.core.classes import DEFAULT_CLASSES
from service.core.errors import InvalidStudyError
from service.core.manifest import ModelManifest
from service.dicom.seg_writer import (
    SEG_FILE_NAME,
    build_segmentation,
    write_study_seg,
)
from service.dicom.volume import CTVolume, series_to_volume
from training.phantom import write_ct_series

SHAPE = (4, 16, 18)
BIRTH_DATE = "19xx0704"


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list:
    hu = np.random.default_rng(1).integers(-1000, 400, SHAPE).astype(np.float32)
    return write_ct_series(
        hu,
        (2.5, 0.8, 0.8),
        tmp_path_factory.mktemp("ct"),
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="Phantom^Errors",
        patient_id="PE0001",
        seed=1,
    )


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return ModelManifest(
        name="pulmoseg-test-net",
        version="1.0.0",
        classes=list(DEFAULT_CLASSES),
        slice_context=3,
        hu_window=(-1000.0, 200.0),
        input_size=SHAPE[1:],
    )


def volume_with(paths: list, **attributes: object) -> CTVolume:
    datasets = [pydicom.dcmread(p) for p in paths]
    for ds in datasets:
        for keyword, value in attributes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
    return series_to_volume(datasets)


def labels() -> np.ndarray:
    out = np.zeros(SHAPE, dtype=np.uint8)
    out[1:3, 4:10, 4:12] = 1
    return out


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"PatientSex": "X"}, r"PatientSex \(0010,0040\) holds a value outside 'M', 'F', 'O'"),
        ({"PatientSex": "unknown"}, r"PatientSex \(0010,0040\)"),
        ({"PatientName": "A" * 70}, r"PatientName \(0010,0010\) is not a valid PN value"),
        ({"AccessionNumber": "A" * 20}, r"AccessionNumber \(0008,0050\) is not a valid SH"),
        ({"StudyDate": "notadate"}, r"StudyDate \(0008,0020\) is not a DICOM date \(YYYYMMDD\)"),
        ({"StudyTime": "ab"}, r"StudyTime \(0008,0030\) is not a DICOM time"),
        ({"PatientBirthDate": BIRTH_DATE}, r"PatientBirthDate \(0010,0030\) is not a DICOM date"),
    ],
    ids=[
        "sex-X",
        "sex-word",
        "name-too-long",
        "accession-too-long",
        "study-date",
        "study-time",
        "dob",
    ],
)
def test_source_attributes_highdicom_rejects(
    paths: list, manifest: ModelManifest, attributes: dict, message: str
) -> None:
    volume = volume_with(paths, **attributes)
    with pytest.raises(InvalidStudyError, match=message) as info:
        build_segmentation(volume, labels(), manifest, software_version="1")
    assert BIRTH_DATE not in str(info.value)  # messages name attributes, never patient data


def test_other_highdicom_rejections_are_invalid_study_errors_too(
    paths: list, manifest: ModelManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the repairs do not foresee still reaches the client as INVALID_ARGUMENT material.

    An unknown Specific Character Set used to be the example; it is repaired now (see
    ``service.dicom.seg_source``), so a future highdicom rejection is simulated at its call.
    """

    def reject(**kwargs: object) -> None:
        raise ValueError("Source image attribute 'SomeFutureCheck' is not acceptable.")

    monkeypatch.setattr("service.dicom.seg_writer.hd.seg.Segmentation", reject)
    with pytest.raises(
        InvalidStudyError,
        match=r"cannot be encoded as a BINARY DICOM-SEG: highdicom rejected its source images "
        r"\(ValueError: .*SomeFutureCheck",
    ) as info:
        build_segmentation(volume_with(paths), labels(), manifest, software_version="1")
    assert isinstance(info.value.__cause__, ValueError)


def test_unknown_character_set_is_repaired_not_refused(
    paths: list, manifest: ModelManifest
) -> None:
    volume = volume_with(paths, SpecificCharacterSet="ISO_IR 999")
    seg = build_segmentation(volume, labels(), manifest, software_version="1")
    assert "SpecificCharacterSet" not in seg  # the phantom's text is ASCII


@pytest.mark.parametrize(
    ("attributes", "written"),
    [
        ({}, {}),
        ({"PatientSex": ""}, {"PatientSex": ""}),
        ({"PatientBirthDate": ""}, {"PatientBirthDate": ""}),
        ({"PatientSex": "O"}, {"PatientSex": "O"}),
        ({"PatientSex": "m"}, {"PatientSex": "M"}),  # repaired
        ({"PatientID": None}, {"PatientID": ""}),  # Type 2: written empty (anonymised studies)
        ({"AccessionNumber": None, "StudyTime": None}, {"AccessionNumber": "", "StudyTime": ""}),
    ],
    ids=["as-is", "sex-empty", "dob-empty", "sex-O", "sex-lower", "no-id", "no-accession-time"],
)
def test_acceptable_sources_make_a_seg(
    paths: list, manifest: ModelManifest, attributes: dict, written: dict
) -> None:
    seg = build_segmentation(
        volume_with(paths, **attributes), labels(), manifest, software_version="1"
    )
    for keyword, value in written.items():
        assert str(seg.get(keyword) or "") == value


def test_write_study_seg_writes_one_file_atomically(
    paths: list, manifest: ModelManifest, tmp_path
) -> None:
    volume = volume_with(paths)
    data = write_study_seg(
        volume, labels(), manifest, software_version="1", output_folder=tmp_path / "out"
    )
    assert [p.name for p in (tmp_path / "out").iterdir()] == [SEG_FILE_NAME]
    assert (tmp_path / "out" / SEG_FILE_NAME).read_bytes() == data
    assert write_study_seg(volume, labels(), manifest, software_version="1")[128:132] == b"DICM"
