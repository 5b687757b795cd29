"""StudyRunner with the session's trained and exported model: the graph as a plain call."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from service.app.study_runner import StudyRunner
from service.core.errors import InvalidStudyError
from service.core.progress import ProgressStage
from service.core.segmentation_metrics import per_class_vol_dice
from service.dicom.seg_reader import read_seg_labels
from training.data.volumes import load_nifti_zyx


@pytest.fixture(scope="module")
def runner(exported_model: Path) -> StudyRunner:
    return StudyRunner.load(exported_model)


def _blobs(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def test_segment_returns_seg_matching_truth(runner: StudyRunner, held_out_study) -> None:
    stages: list[ProgressStage] = []
    result = runner.segment(
        _blobs(held_out_study.dicom_dir), on_progress=lambda stage, _: stages.append(stage)
    )
    pipeline_stages = [s for s in ProgressStage if s.value in result.stage_seconds]
    assert pipeline_stages == [
        ProgressStage.PARSING,
        ProgressStage.SELECTING,
        ProgressStage.VOLUME,
        ProgressStage.INFERENCE,
        ProgressStage.WRITING,
    ]
    assert list(dict.fromkeys(stages)) == pipeline_stages
    assert result.seconds >= result.stage_seconds["inference"] > 0.0
    uids = [ds.SOPInstanceUID for ds in result.volume.datasets]
    labels = read_seg_labels(result.seg_bytes, uids)
    np.testing.assert_array_equal(labels, result.labels)  # the file says what we meant
    truth, _ = load_nifti_zyx(held_out_study.label)
    assert per_class_vol_dice(labels, truth, [1])[1] >= 0.85
    assert len(result.study_uid_hash) == 16
    assert set(result.class_volumes_ml) == {"lung", "ggo", "consolidation"}
    assert result.class_volumes_ml["lung"] > 100.0
    # The encoded pixels went once the volume held them; the SEG above referenced them anyway.
    assert not any("PixelData" in ds for ds in result.volume.datasets)


def test_large_buffers_stay_mmapped_so_a_finished_study_is_given_back() -> None:
    import ctypes.util

    from service.app.memory_release import keep_large_buffers_mmapped

    glibc = ctypes.util.find_library("c") is not None and hasattr(ctypes.CDLL(None), "mallopt")
    assert keep_large_buffers_mmapped() is glibc
    assert keep_large_buffers_mmapped() is glibc  # once per process, then the same answer


def test_bad_study_raises_domain_error_and_runner_keeps_working(
    runner: StudyRunner, held_out_study
) -> None:
    with pytest.raises(InvalidStudyError, match="not DICOM"):
        runner.segment([b"definitely not a DICOM file"])
    with pytest.raises(InvalidStudyError, match="No DICOM instances"):
        runner.segment([])
    result = runner.segment(_blobs(held_out_study.dicom_dir))
    assert result.num_instances == len(list(held_out_study.dicom_dir.iterdir()))


def test_concurrent_studies_share_one_session(runner: StudyRunner, held_out_study) -> None:
    blobs = _blobs(held_out_study.dicom_dir)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(runner.segment(blobs).labels)
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
