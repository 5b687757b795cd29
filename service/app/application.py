"""The MONAI Deploy ``Application`` that segments one study.

Both entry points run this class: ``python -m service.app`` (a folder in, ``seg.dcm`` out; the
MAP entry point) and the gRPC server, which builds one per request around the warm, shared
predictor (``service.app.study_runner``). Its constructor takes configuration only; the study's
data flows through the operators' ports (``service.app.operators``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")

from holoscan.conditions import CountCondition  # noqa: E402
from monai.deploy.core import Application  # noqa: E402

from service.app.applicability_operator import ApplicabilityOperator  # noqa: E402
from service.app.operators import (  # noqa: E402
    APPLICABILITY,
    DATASETS,
    LABELS,
    QUALITY,
    SEG,
    SERIES,
    SKIPPED,
    VOLUME,
    CTSeriesSelectorOperator,
    DicomInstancesLoaderOperator,
    DicomSegWriterOperator,
    OnnxSegmentationOperator,
    ProgressHooks,
    SeriesToVolumeOperator,
    StudyResultOperator,
)
from service.app.quality_operator import QualityOperator  # noqa: E402
from service.app.study_result import StudyResult  # noqa: E402
from service.core.errors import ModelError  # noqa: E402
from service.core.options import ApplicabilityPolicy, SegmentationType  # noqa: E402
from service.dicom.study_input import StudySource  # noqa: E402
from service.predictor import Predictor  # noqa: E402
from service.quality.assessment import QualityConfig  # noqa: E402


class LungSegmentationApp(Application):
    """DICOM instances → CT series → HU volume → ONNX segmentation → DICOM-SEG → [quality] → result.

    With a ``QualityConfig`` the graph also runs the quality step (clinical summary, consistency
    VolDice, DICOM SR) between the SEG writer and the sink.
    """

    name = "pulmoseg"
    description = "Segments lung, ground-glass opacity and consolidation in chest CT."

    def __init__(
        self,
        predictor: Predictor,
        source: StudySource,
        on_result: Callable[[StudyResult], None],
        *,
        segmentation_type: SegmentationType | str = SegmentationType.BINARY,
        output_folder: Path | None = None,
        hooks: ProgressHooks | None = None,
        quality: QualityConfig | None = None,
        applicability_policy: ApplicabilityPolicy | str = ApplicabilityPolicy.SEGMENT_AND_FLAG,
        **kwargs: Any,
    ) -> None:
        if predictor.manifest is None:
            raise ValueError("Argument 'predictor' must carry a model manifest.")
        self.predictor = predictor
        self.source = source
        self.on_result = on_result
        self.segmentation_type = SegmentationType.parse(
            segmentation_type, "Argument 'segmentation_type'"
        )
        self.output_folder = output_folder
        self.hooks = hooks if hooks is not None else ProgressHooks()
        self.quality = quality
        self.applicability_policy = ApplicabilityPolicy.parse(
            applicability_policy, "Argument 'applicability_policy'"
        )
        # Holoscan parses argv when given none; the study, not the command line, is the input.
        kwargs.setdefault("argv", ["pulmoseg"])
        super().__init__(**kwargs)

    def compose(self) -> None:
        manifest, hooks = self.predictor.manifest, self.hooks
        if manifest is None:
            raise ModelError(
                "The predictor carries no model manifest; load it from an exported ONNX file."
            )
        loader = DicomInstancesLoaderOperator(
            self, CountCondition(self, 1), source=self.source, hooks=hooks, name="dicom_loader"
        )
        selector = CTSeriesSelectorOperator(self, hooks=hooks, name="series_selector")
        to_volume = SeriesToVolumeOperator(self, hooks=hooks, name="series_to_volume")
        check = ApplicabilityOperator(
            self,
            manifest=manifest,
            policy=self.applicability_policy,
            hooks=hooks,
            name="applicability",
        )
        infer = OnnxSegmentationOperator(
            self, predictor=self.predictor, hooks=hooks, name="onnx_inference"
        )
        writer = DicomSegWriterOperator(
            self,
            manifest=manifest,
            segmentation_type=self.segmentation_type,
            output_folder=self.output_folder,
            hooks=hooks,
            name="seg_writer",
        )
        sink = StudyResultOperator(
            self,
            manifest=manifest,
            on_result=self.on_result,
            with_quality=self.quality is not None,
            name="study_result",
        )
        self.add_flow(loader, selector, {(DATASETS.name, DATASETS.name)})
        self.add_flow(loader, sink, {(SKIPPED.name, SKIPPED.name)})
        self.add_flow(selector, to_volume, {(SERIES.name, SERIES.name)})
        # Inference takes the checked volume, so it runs after the applicability checks.
        self.add_flow(to_volume, check, {(VOLUME.name, VOLUME.name)})
        self.add_flow(check, infer, {(VOLUME.name, VOLUME.name)})
        self.add_flow(check, sink, {(APPLICABILITY.name, APPLICABILITY.name)})
        self.add_flow(to_volume, writer, {(VOLUME.name, VOLUME.name)})
        self.add_flow(to_volume, sink, {(VOLUME.name, VOLUME.name)})
        self.add_flow(infer, writer, {(LABELS.name, LABELS.name)})
        self.add_flow(infer, sink, {(LABELS.name, LABELS.name)})
        self.add_flow(writer, sink, {(SEG.name, SEG.name)})
        if self.quality is not None:
            quality = QualityOperator(
                self,
                predictor=self.predictor,
                manifest=manifest,
                config=self.quality,
                output_folder=self.output_folder,
                hooks=hooks,
                name="quality",
            )
            self.add_flow(to_volume, quality, {(VOLUME.name, VOLUME.name)})
            self.add_flow(infer, quality, {(LABELS.name, LABELS.name)})
            self.add_flow(writer, quality, {(SEG.name, SEG.name)})
            self.add_flow(check, quality, {(APPLICABILITY.name, APPLICABILITY.name)})
            self.add_flow(quality, sink, {(QUALITY.name, QUALITY.name)})
