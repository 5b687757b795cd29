"""The MONAI Deploy operators of the study graph; data travels through their ports only.

``load → select CT series → volume → ONNX inference → DICOM-SEG → result``. The ports (operator
names as ``LungSegmentationApp`` gives them)::

    port      type        from               to
    datasets  list        dicom_loader       series_selector
    skipped   list        dicom_loader       study_result  (items the study-folder rule left out)
    series    list        series_selector    series_to_volume
    volume    CTVolume    series_to_volume   applicability, seg_writer, study_result
    volume    CTVolume    applicability      onnx_inference  (the checked volume: inference waits)
    applicability Applicability applicability study_result, quality
    labels    np.ndarray  onnx_inference     seg_writer, study_result
    seg       bytes       seg_writer         quality, study_result
    quality   StudyQuality quality           study_result  (when built with a QualityConfig)

Like the SDK's own operators, each one declares its ports in ``setup(spec)`` and takes only
configuration in its constructor (the predictor, the manifest, the segmentation type, the output
folder, and the progress/cancellation callables of :class:`ProgressHooks`). ``compute`` is a thin
adapter: it receives, calls one plain function that is tested without a graph, and emits. The
ports are typed (:class:`Port`): a value of the wrong type is a ``TypeError`` naming the port.

Errors are not caught here. An exception raised in ``compute`` (e.g. ``InvalidStudyError`` from
the series selector, ``CancelledError`` when the client hung up) stops the graph, and Holoscan
re-raises that same exception object from ``Application.run()``; see
``service.app.study_runner``, the one place that runs the graph and lets it propagate.

The result leaves the graph through the sink, :class:`StudyResultOperator`, which hands the
study's :class:`~service.app.study_result.StudyResult` to the ``on_result`` callable it was
built with; the runner owns the slot that callable fills.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from monai.deploy.core import Operator, OperatorSpec

from service import __version__
from service.app.study_result import StudyResult, summarise_study
from service.core.lung_field import manifest_confinement
from service.core.manifest import ModelManifest
from service.core.options import SegmentationType
from service.core.progress import ProgressStage
from service.dicom.seg_writer import write_study_seg
from service.dicom.study_input import StudySource, load_study, select_ct_series
from service.dicom.volume import CTVolume, release_encoded_pixels, series_to_volume
from service.predictor import Predictor
from service.quality.applicability import Applicability
from service.quality.assessment import StudyQuality

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``on_progress(stage, fraction)``: ``fraction`` (0..1) is the stage's own progress.
ProgressCallback = Callable[[ProgressStage, float], None]


@dataclass(frozen=True)
class Port(Generic[T]):
    """A named operator port and the type of the value it carries."""

    name: str
    type: type[T]

    def receive(self, op_input: Any) -> T:
        value = op_input.receive(self.name)
        if not isinstance(value, self.type):
            raise TypeError(
                f"Port '{self.name}' must carry a {self.type.__name__}, got {type(value).__name__}."
            )
        return value

    def emit(self, op_output: Any, value: T) -> None:
        op_output.emit(value, self.name)


DATASETS: Port[list] = Port("datasets", list)
#: ``SkippedFile``s: what the study-folder rule left out, for the result to report.
SKIPPED: Port[list] = Port("skipped", list)
SERIES: Port[list] = Port("series", list)
VOLUME: Port[CTVolume] = Port("volume", CTVolume)
LABELS: Port[np.ndarray] = Port("labels", np.ndarray)
SEG: Port[bytes] = Port("seg", bytes)
#: Output of ``service.app.quality_operator.QualityOperator`` (when the graph has one).
QUALITY: Port[StudyQuality] = Port("quality", StudyQuality)
#: Output of ``service.app.applicability_operator.ApplicabilityOperator`` (checks before inference).
APPLICABILITY: Port[Applicability] = Port("applicability", Applicability)


@dataclass(frozen=True)
class ProgressHooks:
    """Configuration shared by a graph's operators: where to report progress, when to stop.

    Both are optional callables; the hooks hold no state of their own.
    """

    on_progress: ProgressCallback | None = None
    is_cancelled: Callable[[], bool] | None = None

    def report(self, stage: ProgressStage, fraction: float) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, fraction)

    def check_cancelled(self) -> None:
        if self.is_cancelled is not None and self.is_cancelled():
            raise CancelledError("the client cancelled the study")

    @contextmanager
    def stage(self, stage: ProgressStage) -> Iterator[Callable[[float], None]]:
        """Bracket one stage: stop if cancelled, report 0, yield a reporter, report 1 on success."""
        self.check_cancelled()
        self.report(stage, 0.0)
        yield lambda fraction: self.report(stage, fraction)
        self.report(stage, 1.0)


NO_HOOKS = ProgressHooks()


class DicomInstancesLoaderOperator(Operator):
    """Source: the study's instances (uploaded bytes or a folder) as pydicom datasets, and the
    items skipped by the study-folder rule (:mod:`service.dicom.study_folder`).

    Build it with ``CountCondition(fragment, 1)``: a source without one re-runs forever.
    """

    def __init__(
        self,
        fragment: Any,
        *args: Any,
        source: StudySource,
        hooks: ProgressHooks = NO_HOOKS,
        **kwargs: Any,
    ) -> None:
        self.source = source
        self.hooks = hooks
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output(DATASETS.name)
        spec.output(SKIPPED.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        with self.hooks.stage(ProgressStage.PARSING) as report:
            study = load_study(
                self.source, on_progress=report, is_cancelled=self.hooks.is_cancelled
            )
        DATASETS.emit(op_output, study.datasets)
        SKIPPED.emit(op_output, study.skipped)


class CTSeriesSelectorOperator(Operator):
    """Picks the CT series to segment (rejects studies without one, or mixed studies)."""

    def __init__(
        self, fragment: Any, *args: Any, hooks: ProgressHooks = NO_HOOKS, **kwargs: Any
    ) -> None:
        self.hooks = hooks
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(DATASETS.name)
        spec.output(SERIES.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        datasets = DATASETS.receive(op_input)
        with self.hooks.stage(ProgressStage.SELECTING):
            series = select_ct_series(datasets)
        SERIES.emit(op_output, series)


class SeriesToVolumeOperator(Operator):
    """Sorts the series spatially and builds the HU volume."""

    def __init__(
        self, fragment: Any, *args: Any, hooks: ProgressHooks = NO_HOOKS, **kwargs: Any
    ) -> None:
        self.hooks = hooks
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(SERIES.name)
        spec.output(VOLUME.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        series = SERIES.receive(op_input)
        with self.hooks.stage(ProgressStage.VOLUME):
            volume = series_to_volume(series)
            release_encoded_pixels(volume)
        VOLUME.emit(op_output, volume)


class OnnxSegmentationOperator(Operator):
    """Runs the shared, warm predictor (ONNX Runtime) on the volume; emits the label volume.

    MONAI's stock ``MonaiSegInferenceOperator`` has no ONNX path, hence this operator.
    """

    def __init__(
        self,
        fragment: Any,
        *args: Any,
        predictor: Predictor,
        hooks: ProgressHooks = NO_HOOKS,
        **kwargs: Any,
    ) -> None:
        self.predictor = predictor
        self.hooks = hooks
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(VOLUME.name)
        spec.output(LABELS.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        volume = VOLUME.receive(op_input)
        with self.hooks.stage(ProgressStage.INFERENCE) as report:
            labels = self.predictor.predict_labels(
                volume.hu, on_progress=report, is_cancelled=self.hooks.is_cancelled
            )
            # Found once per study: the consistency check confines with the same field.
            volume.lung_field = manifest_confinement(
                volume.hu, volume.spacing_zyx, self.predictor.manifest
            )
            if volume.lung_field is not None:
                labels = volume.lung_field.confine(labels)
        LABELS.emit(op_output, labels)


class DicomSegWriterOperator(Operator):
    """Encodes the labels as DICOM-SEG bytes; writes ``seg.dcm`` when given an output folder."""

    def __init__(
        self,
        fragment: Any,
        *args: Any,
        manifest: ModelManifest,
        segmentation_type: SegmentationType = SegmentationType.BINARY,
        output_folder: Path | None = None,
        hooks: ProgressHooks = NO_HOOKS,
        **kwargs: Any,
    ) -> None:
        self.manifest = manifest
        self.segmentation_type = segmentation_type
        self.output_folder = output_folder
        self.hooks = hooks
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(VOLUME.name)
        spec.input(LABELS.name)
        spec.output(SEG.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        volume = VOLUME.receive(op_input)
        labels = LABELS.receive(op_input)
        with self.hooks.stage(ProgressStage.WRITING):
            seg = write_study_seg(
                volume,
                labels,
                self.manifest,
                software_version=__version__,
                segmentation_type=self.segmentation_type,
                output_folder=self.output_folder,
            )
        SEG.emit(op_output, seg)


class StudyResultOperator(Operator):
    """Sink: summarises the study and hands the result to ``on_result`` (given at construction)."""

    def __init__(
        self,
        fragment: Any,
        *args: Any,
        manifest: ModelManifest,
        on_result: Callable[[StudyResult], None],
        with_quality: bool = False,
        **kwargs: Any,
    ) -> None:
        self.manifest = manifest
        self.on_result = on_result
        self.with_quality = with_quality
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(VOLUME.name)
        spec.input(LABELS.name)
        spec.input(SEG.name)
        spec.input(SKIPPED.name)
        spec.input(APPLICABILITY.name)
        if self.with_quality:
            spec.input(QUALITY.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        volume = VOLUME.receive(op_input)
        labels = LABELS.receive(op_input)
        seg = SEG.receive(op_input)
        skipped = SKIPPED.receive(op_input)
        applicability = APPLICABILITY.receive(op_input)
        quality = QUALITY.receive(op_input) if self.with_quality else None
        self.on_result(
            summarise_study(volume, labels, seg, self.manifest, quality, skipped, applicability)
        )
