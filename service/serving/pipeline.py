"""What the servers need from a loaded model: the :class:`SegmentationPipeline` protocol.

The servicers and :mod:`service.serving.server` hold the pipeline behind this protocol instead
of importing ``StudyRunner``: that import pulls in MONAI Deploy, Holoscan and ONNX Runtime,
which the server loads only in its background model-loading thread. The protocol names exactly
what they use, so a test double or another runner satisfies it by having these members.
``StudyRunner`` (``service.app.study_runner``) is the implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from service.core.manifest import ModelManifest
from service.core.options import SegmentationType
from service.core.progress import ProgressStage

if TYPE_CHECKING:
    from service.app.study_result import StudyResult

__all__ = ["SegmentationPipeline"]


class SegmentationPipeline(Protocol):
    """A loaded model that segments uploaded studies; thread-safe (calls run concurrently)."""

    #: The model's manifest: name, version and classes for GetModelInfo, summaries and metrics.
    manifest: ModelManifest
    #: The ONNX Runtime execution provider that runs the model, e.g. "CPUExecutionProvider".
    provider: str

    def segment(
        self,
        instances: Sequence[bytes],
        *,
        segmentation_type: SegmentationType | str = ...,
        on_progress: Callable[[ProgressStage, float], None] | None = ...,
        is_cancelled: Callable[[], bool] | None = ...,
    ) -> StudyResult:
        """Segment the uploaded DICOM instances; raises the pipeline's domain exceptions.

        ``on_progress(stage, fraction)`` hears each stage's own fraction, stages in order;
        ``is_cancelled()`` is polled between steps so a departed client stops the work.
        """
        ...
