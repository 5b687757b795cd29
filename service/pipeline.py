"""One study through the MONAI Deploy graph, as a plain call: bytes in, DICOM-SEG out.

``StudyPipeline`` owns the warm ONNX Runtime session; each ``segment`` call runs a fresh
Holoscan graph (about 40 ms of overhead) so concurrent requests never share graph state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.application import LungSegmentationApp
from service.core.errors import PulmosegError
from service.core.identifiers import uid_hash
from service.predictor import Predictor
from service.core.manifest import ModelManifest
from service.operators import StudyRun
from service.core.segmentation_metrics import class_volumes_ml
from service.volume import CTVolume

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """The outcome of one study: the SEG file plus a summary safe to log."""

    seg_bytes: bytes
    study_uid_hash: str
    class_volumes_ml: dict[str, float]
    num_instances: int
    timings: dict[str, float]
    labels: np.ndarray = field(repr=False)
    volume: CTVolume = field(repr=False)


class StudyPipeline:
    """Loaded model + the per-study graph; thread-safe."""

    def __init__(self, segmenter: Predictor) -> None:
        self.segmenter = segmenter
        if segmenter.manifest is None:
            raise ValueError("Argument 'segmenter' must carry a model manifest.")
        self.manifest: ModelManifest = segmenter.manifest
        self.provider: str = segmenter.provider
        self.model_path: Path = segmenter.backend.model_path  # type: ignore[attr-defined]

    @classmethod
    def load(cls, model_path: str | Path, *, require_gpu: bool = False) -> StudyPipeline:
        from service.predictor.onnx_backend import load_onnx_predictor

        return cls(load_onnx_predictor(model_path, require_gpu=require_gpu))

    def segment(
        self,
        instances: Sequence[bytes],
        *,
        segmentation_type: str = "BINARY",
        on_progress: Callable[[str, float], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> StudyResult:
        """Segment uploaded DICOM instances; raises the pipeline's domain exceptions."""
        study = StudyRun(
            instances=list(instances),
            segmentation_type=segmentation_type,
            on_progress=on_progress,
            is_cancelled=is_cancelled,
        )
        return self._run(study)

    def segment_directory(
        self,
        input_dir: str | Path,
        output_dir: str | Path | None = None,
        *,
        segmentation_type: str = "BINARY",
    ) -> StudyResult:
        """Segment a folder of DICOM files; writes ``seg.dcm`` into ``output_dir`` if given."""
        study = StudyRun(
            input_dir=Path(input_dir),
            output_dir=Path(output_dir) if output_dir is not None else None,
            segmentation_type=segmentation_type,
        )
        return self._run(study)

    def _run(self, study: StudyRun) -> StudyResult:
        started = time.perf_counter()
        LungSegmentationApp(self.segmenter, study).run()
        if study.error is not None:
            raise study.error
        if "seg_bytes" not in study.outputs:
            raise PulmosegError("The segmentation graph stopped without a result.")
        volume: CTVolume = study.outputs["volume"]
        labels: np.ndarray = study.outputs["labels"]
        timings = dict(study.timings)
        timings["total"] = time.perf_counter() - started
        volumes = class_volumes_ml(
            labels, volume.spacing_zyx, [c.index for c in self.manifest.foreground_classes]
        )
        by_name = {c.name: float(volumes[c.index]) for c in self.manifest.foreground_classes}
        uid_hash = uid_hash(str(volume.datasets[0].StudyInstanceUID))
        log.info(
            "study %s segmented: %d instances in %.3f s",
            uid_hash,
            len(volume.datasets),
            timings["total"],
        )
        return StudyResult(
            seg_bytes=study.outputs["seg_bytes"],
            study_uid_hash=uid_hash,
            class_volumes_ml=by_name,
            num_instances=len(volume.datasets),
            timings=timings,
            labels=labels,
            volume=volume,
        )
