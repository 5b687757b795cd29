"""The service's opt-in capture, read back by training: a study segmented by the real gRPC
server waits outside the dataset, its reference makes it a labeled case, and the training
reader and loader take the folder as it is (HU, spacing and the reader's label intact,
no patient identifier in any stored byte)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.client.client import SegmentationClient
from service.dicom.seg_reader import read_seg_labels
from tests.service.capture.capture_study import (
    capture_of,
    files_under,
    hu_model,
    identifiers_found,
    reference_seg,
    start_server,
    write_study,
)
from training.data.volumes import load_npz_zyx, load_study, read_dataset_manifest
from training.evaluation.evaluate import evaluate_model

WAIT_S = 60.0


def test_a_referenced_study_becomes_a_labeled_case_training_reads(tmp_path):
    study = write_study(tmp_path / "study", seed=8)
    root = tmp_path / "capture"
    model = hu_model(tmp_path)
    running = start_server(model, capture_dir=root)  # labeled capture only
    try:
        capture = capture_of(running)
        with SegmentationClient(running.address, timeout_s=120) as client:
            result = client.segment_directory(study.folder)
            study_hash = result.summary["study_uid_hash"]
            assert capture.wait_idle(WAIT_S)
            # Without a reference nothing is in the dataset, only the pending volume.
            assert [p.relative_to(root).as_posix() for p in files_under(root)] == [
                f"pending/{study_hash}.npz"
            ]
            uids = [str(ds.SOPInstanceUID) for ds in study.volume.datasets]
            reference = read_seg_labels(result.seg_bytes, uids).astype(np.uint8)
            reference[2:9, 16:40, 12:30] = 2
            reference[4:6, 42:50, 30:40] = 3
            client.submit_reference(study_hash, reference_seg(study.volume, reference))
        assert capture.wait_idle(WAIT_S)
    finally:
        running.stop(grace=1)

    assert identifiers_found(root, study.identifiers) == []
    assert not any((root / "pending").iterdir())
    manifest = json.loads((root / "manifest.json").read_text())
    [entry] = manifest["studies"]
    assert entry["model_name"] == result.summary["model_name"]
    assert entry["classes"] == ["background", "lung", "ggo", "consolidation"]

    [record] = read_dataset_manifest(root)
    assert record.study_id == study_hash and record.labeled
    loaded = load_study(record)
    np.testing.assert_array_equal(loaded.hu, np.rint(study.volume.hu))
    assert loaded.spacing_zyx == pytest.approx(study.volume.spacing_zyx)
    assert loaded.label is not None
    np.testing.assert_array_equal(loaded.label, reference)

    # `pulmoseg evaluate` (what a promotion compares models with) scores the captured case.
    report = evaluate_model(model, dataset_root=root)
    assert [item.item for item in report.items] == [study_hash]
    assert 0.0 <= report.summary["vol_dice"]["ggo"]["mean"] <= 1.0


def test_the_npz_loader_names_what_a_file_lacks(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, image=np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"lacks \['spacing_zyx', 'volume'\].*\['image'\]"):
        load_npz_zyx(path)
    np.savez(path, volume=np.zeros((2, 2)), spacing_zyx=np.ones(3))
    with pytest.raises(ValueError, match=r"3D volume.*\(2, 2\)"):
        load_npz_zyx(path)
