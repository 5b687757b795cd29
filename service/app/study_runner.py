"""One study through the MONAI Deploy graph, as a plain call: bytes or a folder in, SEG out.

:class:`StudyRunner` owns the warm predictor (one ONNX Runtime session shared by all requests)
and runs a fresh :class:`~service.app.application.LungSegmentationApp` per study (about 40 ms of
overhead), so concurrent studies never share graph state.

How results and errors leave the graph:

* The sink operator hands the :class:`StudyResult` to the ``on_result`` callable it was built
  with; the runner passes the ``append`` of a list it owns for that one run, and reads it after
  ``run()`` returns. Nothing else is shared between operators.
* An exception raised in an operator's ``compute`` stops the graph, and Holoscan (4.x) re-raises
  that same exception object, traceback included, from ``Application.run()``. :meth:`_run` is
  the one place the graph runs, so the caller gets the domain exception (``InvalidStudyError``,
  ``ModelError``, ``CancelledError`` …) with its message. ``tests/service/app/test_operators.py``
  pins this behaviour of Holoscan, so an upgrade that starts wrapping exceptions fails a test
  instead of turning every bad study into an internal error.
* Stage timings come from the progress events: each operator reports 0 when its stage starts
  and 1 when it ends, and :class:`StageClock` (a callable handed to the operators as
  configuration) times the span between them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from service.app.application import LungSegmentationApp
from service.app.memory_release import keep_large_buffers_mmapped
from service.app.operators import ProgressCallback, ProgressHooks
from service.app.study_result import StudyResult
from service.core.errors import PulmosegError
from service.core.manifest import ModelManifest
from service.core.options import ApplicabilityPolicy, SegmentationType
from service.core.progress import ProgressStage
from service.dicom.study_input import StudySource
from service.predictor import Predictor
from service.quality.assessment import QualityConfig

log = logging.getLogger(__name__)


class StageClock:
    """Times stages from their progress events and forwards the events to ``forward``."""

    def __init__(self, forward: ProgressCallback | None = None) -> None:
        self._forward = forward
        self._lock = threading.Lock()
        self._started: dict[ProgressStage, float] = {}
        self._last: dict[ProgressStage, float] = {}

    def __call__(self, stage: ProgressStage, fraction: float) -> None:
        now = time.perf_counter()
        with self._lock:
            self._started.setdefault(stage, now)
            self._last[stage] = now
        if self._forward is not None:
            self._forward(stage, fraction)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage seen so far, in stage order, keyed by ``ProgressStage`` value."""
        with self._lock:
            return {
                stage.value: self._last[stage] - self._started[stage]
                for stage in ProgressStage
                if stage in self._started
            }


class StudyRunner:
    """The loaded model plus a graph per study; thread-safe."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        quality: QualityConfig | None = None,
        applicability_policy: ApplicabilityPolicy | str = ApplicabilityPolicy.SEGMENT_AND_FLAG,
    ) -> None:
        if not isinstance(predictor, Predictor):
            raise TypeError(
                f"Argument 'predictor' must be a Predictor, got {type(predictor).__name__}."
            )
        if predictor.manifest is None:
            raise ValueError("Argument 'predictor' must carry a model manifest.")
        self.predictor = predictor
        self.manifest: ModelManifest = predictor.manifest
        self.provider: str = predictor.provider
        self.model_path: Path | None = getattr(predictor.backend, "model_path", None)
        #: The quality step's configuration; None runs the graph without it.
        self.quality = quality
        #: What a study outside the model's range gets: segmented and flagged, or refused.
        self.applicability_policy = ApplicabilityPolicy.parse(
            applicability_policy, "Argument 'applicability_policy'"
        )
        keep_large_buffers_mmapped()  # a finished study's memory goes back to the system

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        *,
        require_gpu: bool = False,
        quality: QualityConfig | None = None,
        intra_op_threads: int = 0,
        applicability_policy: ApplicabilityPolicy | str = ApplicabilityPolicy.SEGMENT_AND_FLAG,
    ) -> StudyRunner:
        """``intra_op_threads``: ONNX Runtime's threads per inference (0: one per core)."""
        from service.dicom.volume import warm_decode_pool
        from service.predictor.onnx_backend import load_onnx_predictor

        predictor = load_onnx_predictor(
            model_path, require_gpu=require_gpu, intra_op_threads=intra_op_threads
        )
        warm_decode_pool()  # the slice-decoding processes start now, not in the first study
        return cls(predictor, quality=quality, applicability_policy=applicability_policy)

    def segment(
        self,
        instances: Sequence[bytes],
        *,
        segmentation_type: SegmentationType | str = SegmentationType.BINARY,
        on_progress: ProgressCallback | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        applicability_policy: ApplicabilityPolicy | str | None = None,
    ) -> StudyResult:
        """Segment uploaded DICOM instances; raises the pipeline's domain exceptions.

        ``on_progress(stage, fraction)`` gets each stage's own fraction, stages in order.
        ``applicability_policy`` overrides the runner's for this study (the warm-up study is
        no chest CT and must not be refused).
        """
        return self._run(
            StudySource.from_bytes(instances),
            segmentation_type=segmentation_type,
            hooks=ProgressHooks(on_progress, is_cancelled),
            applicability_policy=applicability_policy,
        )

    def segment_directory(
        self,
        input_dir: str | Path,
        output_dir: str | Path | None = None,
        *,
        segmentation_type: SegmentationType | str = SegmentationType.BINARY,
        on_progress: ProgressCallback | None = None,
    ) -> StudyResult:
        """Segment a folder of DICOM files; writes ``seg.dcm`` into ``output_dir`` if given."""
        return self._run(
            StudySource.from_folder(input_dir),
            segmentation_type=segmentation_type,
            output_folder=Path(output_dir) if output_dir is not None else None,
            hooks=ProgressHooks(on_progress),
        )

    def _run(
        self,
        source: StudySource,
        *,
        segmentation_type: SegmentationType | str,
        hooks: ProgressHooks,
        output_folder: Path | None = None,
        applicability_policy: ApplicabilityPolicy | str | None = None,
    ) -> StudyResult:
        clock = StageClock(hooks.on_progress)
        results: list[StudyResult] = []
        app = LungSegmentationApp(
            self.predictor,
            source,
            results.append,
            segmentation_type=segmentation_type,
            output_folder=output_folder,
            hooks=dataclasses.replace(hooks, on_progress=clock),
            quality=self.quality,
            applicability_policy=applicability_policy or self.applicability_policy,
        )
        started = time.perf_counter()
        app.run()  # an operator's exception comes out here, unchanged (see the module docstring)
        seconds = time.perf_counter() - started
        if len(results) != 1:
            raise PulmosegError(
                f"The segmentation graph stopped with {len(results)} results instead of one."
            )
        stage_seconds = clock.stage_seconds()
        if results[0].quality is not None:  # not a progress stage: timed by the step itself
            stage_seconds["quality"] = results[0].quality.seconds
        result = dataclasses.replace(results[0], stage_seconds=stage_seconds, seconds=seconds)
        log.info(
            "study %s segmented: %d instances in %.3f s",
            result.study_uid_hash,
            result.num_instances,
            seconds,
        )
        return result
