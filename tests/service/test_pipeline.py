"""The MONAI Deploy graph as a plain call, and ``python -m service.app``."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from service.app import main as app_main
from service.core.errors import InvalidStudyError
from service.pipeline import StudyPipeline
from service.core.segmentation_metrics import per_class_vol_dice
from service.seg_reader import read_seg_labels
from training.datasets import load_nifti_zyx


@pytest.fixture(scope="module")
def pipeline(exported_model: Path) -> StudyPipeline:
    return StudyPipeline.load(exported_model)


def _blobs(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def test_segment_returns_seg_matching_truth(pipeline: StudyPipeline, held_out_study) -> None:
    stages: list[str] = []
    result = pipeline.segment(
        _blobs(held_out_study.dicom_dir), on_progress=lambda stage, _: stages.append(stage)
    )
    assert {"parse", "select", "volume", "inference", "seg_write"} <= set(result.timings)
    assert result.timings["total"] >= result.timings["inference"]
    assert stages[0] == "parse" and "inference" in stages and "seg_write" in stages
    uids = [ds.SOPInstanceUID for ds in result.volume.datasets]
    labels = read_seg_labels(result.seg_bytes, uids)
    np.testing.assert_array_equal(labels, result.labels)  # the file says what we meant
    truth, _ = load_nifti_zyx(held_out_study.label)
    assert per_class_vol_dice(labels, truth, [1])[1] >= 0.85
    assert len(result.study_uid_hash) == 16
    assert set(result.class_volumes_ml) == {"lung", "ggo", "consolidation"}
    assert result.class_volumes_ml["lung"] > 100.0


def test_bad_study_raises_domain_error_and_pipeline_keeps_working(
    pipeline: StudyPipeline, held_out_study
) -> None:
    with pytest.raises(InvalidStudyError, match="not DICOM|not a DICOM|DICOM"):
        pipeline.segment([b"definitely not a DICOM file"])
    with pytest.raises(InvalidStudyError, match="No DICOM instances"):
        pipeline.segment([])
    result = pipeline.segment(_blobs(held_out_study.dicom_dir))
    assert result.num_instances == len(list(held_out_study.dicom_dir.iterdir()))


def test_concurrent_studies_share_one_session(pipeline: StudyPipeline, held_out_study) -> None:
    blobs = _blobs(held_out_study.dicom_dir)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(pipeline.segment(blobs).labels)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 3
    for labels in results[1:]:
        np.testing.assert_array_equal(labels, results[0])


def test_monai_deploy_app_entry_point(
    exported_model: Path, held_out_study, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        app_main(
            ["-i", str(held_out_study.dicom_dir), "-o", str(out), "-m", str(exported_model.parent)]
        )
        == 0
    )
    assert (out / "seg.dcm").is_file() and (out / "summary.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["seg.dcm", "summary.json"]
    assert app_main(["-i", str(tmp_path / "nope"), "-o", str(out), "-m", str(exported_model)]) == 1
    assert "does not exist" in capsys.readouterr().err
