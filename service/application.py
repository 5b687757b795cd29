"""The MONAI Deploy ``Application`` that wires the operators for one study.

The same graph serves both entry points: ``python -m service.app`` (a folder in, ``seg.dcm``
out, packageable as a MAP) and the gRPC server, which runs one graph per request around a
warm, shared ONNX Runtime session.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")

from holoscan.conditions import CountCondition  # noqa: E402
from monai.deploy.core import Application  # noqa: E402

from service.predictor import Predictor  # noqa: E402
from service.operators import (  # noqa: E402
    CTSeriesSelectorOperator,
    DicomInstancesLoaderOperator,
    DicomSegWriterOperator,
    OnnxSegmentationOperator,
    SeriesToVolumeOperator,
    StudyResultOperator,
    StudyRun,
)


class LungSegmentationApp(Application):
    """DICOM instances → CT series → HU volume → ONNX segmentation → DICOM-SEG."""

    name = "pulmoseg"
    description = "Segments lung, ground-glass opacity and consolidation in chest CT."

    def __init__(
        self, segmenter: Predictor, study: StudyRun, *args: Any, **kwargs: Any
    ) -> None:
        self.segmenter = segmenter
        self.study = study
        # Holoscan parses argv when given none; the study, not the command line, is the input.
        kwargs.setdefault("argv", ["pulmoseg"])
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        study, segmenter = self.study, self.segmenter
        loader = DicomInstancesLoaderOperator(
            self, CountCondition(self, 1), study=study, name="dicom_loader"
        )
        selector = CTSeriesSelectorOperator(self, study=study, name="series_selector")
        to_volume = SeriesToVolumeOperator(self, study=study, name="series_to_volume")
        infer = OnnxSegmentationOperator(
            self, segmenter=segmenter, study=study, name="onnx_inference"
        )
        writer = DicomSegWriterOperator(self, segmenter=segmenter, study=study, name="seg_writer")
        sink = StudyResultOperator(self, study=study, name="study_result")
        self.add_flow(loader, selector, {("datasets", "datasets")})
        self.add_flow(selector, to_volume, {("series", "series")})
        self.add_flow(to_volume, infer, {("volume", "volume")})
        self.add_flow(infer, writer, {("volume", "volume"), ("labels", "labels")})
        self.add_flow(writer, sink, {("result", "result")})
