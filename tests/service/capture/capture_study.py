"""Shared by the capture tests (service and training side): a phantom study with known patient
identifiers, a server on loopback with the tiny HU model, and a reader's reference SEG."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from service.capture import StudyCapture
from service.dicom.volume import CTVolume, series_to_volume
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings
from tests.service.quality.hu_model import write_hu_model
from tests.service.quality.reader_seg import reader_seg
from training.phantom import synthesize_study, write_ct_series

SIZE = 64


@dataclass(frozen=True)
class Study:
    folder: Path
    volume: CTVolume
    #: Every value that would identify the patient or the study if it reached the capture.
    identifiers: tuple[str, ...]


def write_study(folder: Path, seed: int) -> Study:
    phantom = synthesize_study(seed, size=SIZE, slices=12)
    study_uid, series_uid = generate_uid(), generate_uid()
    paths = write_ct_series(
        phantom.hu,
        phantom.spacing_zyx,
        folder,
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=f"Capture^Patient{seed}",
        patient_id=f"CAPTURE-{seed:04d}",
        seed=seed,
        study_id=f"ACC{seed:05d}",
    )
    datasets = [pydicom.dcmread(p) for p in paths]
    volume = series_to_volume(datasets)
    first = datasets[0]
    identifiers = {
        f"Capture^Patient{seed}",
        f"CAPTURE-{seed:04d}",
        f"ACC{seed:05d}",
        study_uid,
        series_uid,
        str(first.FrameOfReferenceUID),
        *(str(ds.SOPInstanceUID) for ds in datasets),
    }
    for keyword in ("PatientBirthDate", "AccessionNumber", "StudyDate"):
        value = str(first.get(keyword, "") or "")
        if len(value) >= 6:  # short values (e.g. "1") would match random bytes
            identifiers.add(value)
    return Study(folder, volume, tuple(sorted(identifiers)))


def start_server(model: Path, **overrides: Any) -> RunningServer:
    settings = load_settings(
        env={},
        port=0,
        metrics_port=0,
        max_workers=4,
        max_concurrent_studies=1,
        model_path=model,
        **overrides,
    )
    running = build_server(settings)
    assert running.wait_until_ready(60), f"model did not load: {running.load_error!r}"
    return running


def capture_of(running: RunningServer) -> StudyCapture:
    """The server's capture (the tests started it with ``capture_dir``)."""
    capture = running.monitor.capture if running.monitor is not None else None
    assert isinstance(capture, StudyCapture), capture
    return capture


def hu_model(folder: Path) -> Path:
    return write_hu_model(folder / "model.onnx", SIZE)


def reference_seg(volume: CTVolume, labels: np.ndarray) -> bytes:
    """A reader's BINARY SEG of exclusive ``labels`` (class indices), segments lung, GGO,
    consolidation numbered 1..3 as another tool would."""
    names = ["lung", "ggo", "consolidation"]
    return reader_seg(volume.datasets, labels, names, omit_empty_frames=False)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def stored_bytes(path: Path) -> bytes:
    """A file's content as a reader would find it: each member of a zip (``.npz``) inflated."""
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as archive:
            return b"".join(archive.read(name) for name in archive.namelist())
    return path.read_bytes()


def identifiers_found(root: Path, identifiers: tuple[str, ...]) -> list[str]:
    found = []
    for path in files_under(root):
        content = stored_bytes(path)
        for value in identifiers:  # UTF-8 (JSON) and UTF-32 (numpy string arrays)
            if value.encode() in content or value.encode("utf-32-le") in content:
                found.append(f"{value!r} in {path.name}")
    return found
