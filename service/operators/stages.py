"""The concrete stages: load → select CT series → volume → ONNX inference → SEG → result."""

from __future__ import annotations

from typing import Any

import numpy as np

from service import __version__
from service.dicom_input import load_instances_from_dir, parse_instance, select_ct_series
from service.core.errors import InvalidStudyError
from service.predictor import Predictor
from service.operators.base import StageOperator, StudyRun
from service.seg_writer import build_segmentation, segmentation_to_bytes
from service.volume import CTVolume, series_to_volume

SEG_FILE_NAME = "seg.dcm"


class DicomInstancesLoaderOperator(StageOperator):
    """Source: parses the uploaded instances (or reads a folder) into pydicom datasets.

    Run it with ``CountCondition(fragment, 1)``: a source without one re-runs forever.
    """

    stage = "parse"
    outputs = ("datasets",)

    def run_stage(self) -> list[Any]:
        study = self.study
        if study.instances is not None:
            if not study.instances:
                raise InvalidStudyError("No DICOM instances were sent.")
            total = len(study.instances)
            datasets = []
            for i, blob in enumerate(study.instances):
                datasets.append(parse_instance(blob, name=f"instance #{i}"))
                if i % 16 == 0:
                    study.check_cancelled()
                    study.progress(self.stage, (i + 1) / total)
            return datasets
        if study.input_dir is None:
            raise InvalidStudyError("The study has neither uploaded instances nor an input folder.")
        return load_instances_from_dir(study.input_dir)


class CTSeriesSelectorOperator(StageOperator):
    """Picks the CT series to segment (rejects studies without one, or mixed studies)."""

    stage = "select"
    inputs = ("datasets",)
    outputs = ("series",)

    def run_stage(self, datasets: list[Any]) -> list[Any]:
        return select_ct_series(datasets)


class SeriesToVolumeOperator(StageOperator):
    """Sorts the series spatially and builds the HU volume."""

    stage = "volume"
    inputs = ("series",)
    outputs = ("volume",)

    def run_stage(self, series: list[Any]) -> CTVolume:
        return series_to_volume(series)


class OnnxSegmentationOperator(StageOperator):
    """Runs the shared, warm ONNX Runtime session.

    MONAI's stock ``MonaiSegInferenceOperator`` has no ONNX path, hence this operator.
    """

    stage = "inference"
    inputs = ("volume",)
    outputs = ("volume", "labels")

    def __init__(
        self, fragment: Any, *args: Any, segmenter: Predictor, study: StudyRun, **kwargs: Any
    ) -> None:
        self.segmenter = segmenter
        super().__init__(fragment, *args, study=study, **kwargs)

    def run_stage(self, volume: CTVolume) -> tuple[CTVolume, np.ndarray]:
        labels = self.segmenter.predict_labels(
            volume.hu,
            on_progress=lambda f: self.study.progress(self.stage, f),
            is_cancelled=self.study.is_cancelled,
        )
        return volume, labels


class DicomSegWriterOperator(StageOperator):
    """Encodes the labels as DICOM-SEG bytes; writes ``seg.dcm`` when an output folder is set."""

    stage = "seg_write"
    inputs = ("volume", "labels")
    outputs = ("result",)

    def __init__(
        self, fragment: Any, *args: Any, segmenter: Predictor, study: StudyRun, **kwargs: Any
    ) -> None:
        self.manifest = segmenter.manifest
        super().__init__(fragment, *args, study=study, **kwargs)

    def run_stage(self, volume: CTVolume, labels: np.ndarray) -> dict[str, Any]:
        seg = build_segmentation(
            volume,
            labels,
            self.manifest,
            software_version=__version__,
            segmentation_type=self.study.segmentation_type,
        )
        seg_bytes = segmentation_to_bytes(seg)
        if self.study.output_dir is not None:
            self.study.output_dir.mkdir(parents=True, exist_ok=True)
            target = self.study.output_dir / SEG_FILE_NAME
            tmp = target.with_suffix(".partial")
            tmp.write_bytes(seg_bytes)
            tmp.replace(target)
        return {"volume": volume, "labels": labels, "seg_bytes": seg_bytes}


class StudyResultOperator(StageOperator):
    """Sink: hands the graph's result back to the caller through the StudyRun."""

    stage = "result"
    inputs = ("result",)

    def run_stage(self, result: dict[str, Any]) -> tuple[()]:
        self.study.outputs.update(result)
        return ()
