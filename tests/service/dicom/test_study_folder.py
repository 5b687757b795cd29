"""One study-folder rule for the client, the server (folders and uploads) and the PACS worker.

The folder is what a CD export looks like: a real DICOMDIR written by pydicom's ``FileSet``
over the CT series, a README, ``.DS_Store``, a hidden folder, and a second copy of the index
under another name (caught by its SOP class, not its name).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet

from service.core.dicom_uids import MEDIA_STORAGE_DIRECTORY_STORAGE
from service.core.errors import InvalidStudyError
from service.dicom.study_folder import (
    SkippedFile,
    StudyInstances,
    describe_skipped,
    is_dicomdir,
    scan_study_folder,
    walk_study_folder,
)
from service.dicom.study_input import read_study_folder, read_uploaded_study
from service.pacs.worker import choose_ct_files
from tests.service.dicom.test_study_input import make_series

N_SLICES = 4
#: What every entry point must skip in ``export_folder`` (the hidden folder is never entered).
EXPECTED_SKIPS = [
    (".DS_Store", "hidden"),
    (".thumbnails/", "hidden"),
    ("DICOMDIR", "DICOMDIR index"),
    ("README", "not DICOM"),
    ("backup/INDEX.BAK", "DICOMDIR index"),
]


def write_fileset(series: list[Path], target: Path) -> Path:
    """A PS3.10 file-set: ``DICOMDIR`` plus the instances under PT*/ST*/SE*/IM*."""
    file_set = FileSet()
    for path in series:
        file_set.add(path)
    file_set.write(target)
    return target / "DICOMDIR"


def export_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    dicomdir = write_fileset(make_series(tmp_path / "src", N_SLICES), folder)
    (folder / "README").write_text("Exported by the PACS on Monday.\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (folder / ".thumbnails").mkdir()
    shutil.copy(next(folder.rglob("IM000000")), folder / ".thumbnails" / "IM000000")
    (folder / "backup").mkdir()
    shutil.copy(dicomdir, folder / "backup" / "INDEX.BAK")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return export_folder(tmp_path)


def _pairs(skipped: list[SkippedFile]) -> list[tuple[str, str]]:
    return [(s.path, str(s.reason)) for s in skipped]


def test_the_written_dicomdir_is_a_real_file_set_index(folder: Path) -> None:
    index = pydicom.dcmread(folder / "DICOMDIR")
    assert index.file_meta.MediaStorageSOPClassUID == MEDIA_STORAGE_DIRECTORY_STORAGE
    assert is_dicomdir(index)
    assert [r.DirectoryRecordType for r in index.DirectoryRecordSequence][-1] == "IMAGE"


def test_server_folder_reading_skips_and_lists_what_is_not_an_image(folder: Path) -> None:
    study = read_study_folder(folder)
    assert len(study.datasets) == N_SLICES
    assert {ds.Modality for ds in study.datasets} == {"CT"}
    assert _pairs(study.skipped) == EXPECTED_SKIPS
    # files[i] is the file datasets[i] was read from
    assert [ds.SOPInstanceUID for ds in study.datasets] == [
        pydicom.dcmread(p).SOPInstanceUID for p in study.files
    ]


def test_client_scan_skips_the_same_items(folder: Path) -> None:
    scan = scan_study_folder(folder)
    assert [p.name for p in scan.files] == [f"IM00000{i}" for i in range(N_SLICES)]
    assert _pairs(scan.skipped) == EXPECTED_SKIPS
    assert type(scan) is type(read_study_folder(folder)) is StudyInstances  # one type for both
    assert all("PixelData" not in ds for ds in scan.datasets)  # the client reads headers only


def test_uploaded_bytes_are_skipped_by_the_same_rule(folder: Path) -> None:
    """Uploads have no names to hide behind: only the content decides (and the same way)."""
    files, hidden = walk_study_folder(folder)
    assert _pairs(hidden) == [(".DS_Store", "hidden"), (".thumbnails/", "hidden")]
    study = read_uploaded_study([p.read_bytes() for p in files])
    assert len(study.datasets) == N_SLICES
    assert isinstance(study, StudyInstances) and study.files == []  # bytes have no files
    reasons = {files[int(s.path.removeprefix("instance #"))].name: s.reason for s in study.skipped}
    assert reasons == {
        "DICOMDIR": "DICOMDIR index",
        "INDEX.BAK": "DICOMDIR index",
        "README": "not DICOM",
    }


def test_pacs_worker_chooses_the_ct_files_by_the_same_rule(folder: Path) -> None:
    files, _ = walk_study_folder(folder)
    chosen, headers = choose_ct_files(files)
    assert sorted(p.name for p in chosen) == [f"IM00000{i}" for i in range(N_SLICES)]
    assert [str(ds.SOPInstanceUID) for ds in headers] == [
        str(pydicom.dcmread(p).SOPInstanceUID) for p in chosen
    ]


def test_a_study_with_nothing_usable_names_what_was_skipped(tmp_path: Path) -> None:
    folder = export_folder(tmp_path)
    shutil.rmtree(folder / "PT000000")
    expected = (
        r"Study folder '.*' holds no DICOM instances; skipped 5 items: \.DS_Store \(hidden\), "
        r"\.thumbnails/ \(hidden\), DICOMDIR \(DICOMDIR index\), README \(not DICOM\), "
        r"backup/INDEX\.BAK \(DICOMDIR index\)\.$"
    )
    with pytest.raises(InvalidStudyError, match=expected):
        read_study_folder(folder)
    with pytest.raises(InvalidStudyError, match=expected):
        scan_study_folder(folder)
    with pytest.raises(InvalidStudyError, match=r"The spooled study holds no DICOM instances; "):
        choose_ct_files([folder / "README", folder / "DICOMDIR"])
    with pytest.raises(InvalidStudyError, match=r"does not exist or is not a folder"):
        read_study_folder(tmp_path / "missing")


def test_skips_are_logged_as_counts_never_by_name(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An export may name its folders after the patient: the log carries reasons only."""
    (folder / "Doe^John").mkdir()
    (folder / "Doe^John" / "notes.txt").write_text("scan notes")
    caplog.set_level("INFO", logger="service.dicom.study_folder")
    read_study_folder(folder)
    [line] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert line == "study folder: skipped 6 items (2 DICOMDIR index, 2 hidden, 2 not DICOM)"
    assert "Doe" not in caplog.text and "README" not in caplog.text


def test_describe_skipped_lists_a_few_then_counts() -> None:
    skipped = [SkippedFile(f"f{i}", "not DICOM") for i in range(4)]
    assert describe_skipped(skipped, limit=2) == (
        "  f0 (not DICOM)\n  f1 (not DICOM)\n  … and 2 more"
    )
