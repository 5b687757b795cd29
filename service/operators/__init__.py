"""MONAI Deploy App SDK operators of the segmentation pipeline.

Each operator is a thin adapter: ``compute`` receives, calls one plain function of the service
(tested without a graph) and emits. Failures are recorded on the shared :class:`StudyRun`
instead of being raised into the Holoscan scheduler, so the caller gets the original domain
exception (e.g. ``InvalidStudyError``) back with its message intact.
"""

from service.operators.base import StageOperator, StudyRun
from service.operators.stages import (
    CTSeriesSelectorOperator,
    DicomInstancesLoaderOperator,
    DicomSegWriterOperator,
    OnnxSegmentationOperator,
    SeriesToVolumeOperator,
    StudyResultOperator,
)

__all__ = [
    "CTSeriesSelectorOperator",
    "DicomInstancesLoaderOperator",
    "DicomSegWriterOperator",
    "OnnxSegmentationOperator",
    "SeriesToVolumeOperator",
    "StageOperator",
    "StudyResultOperator",
    "StudyRun",
]
