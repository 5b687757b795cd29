"""What one study yields: the SEG plus a summary that is safe to log (no patient data)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.core.identifiers import uid_hash
from service.core.manifest import ModelManifest
from service.core.segmentation_metrics import class_volumes_ml
from service.core.study_outcome import StudyOutcome
from service.dicom.study_folder import SkippedFile
from service.dicom.volume import CTVolume
from service.quality.applicability import Applicability
from service.quality.assessment import StudyQuality
from service.quality.monitor import SegmentedStudy


@dataclass(frozen=True)
class StudyResult:
    """The outcome of one study.

    ``stage_seconds`` is keyed by ``ProgressStage`` value ("parsing" … "writing");
    ``seconds`` is the wall time of the whole graph run, overhead included.
    """

    seg_bytes: bytes = field(repr=False)
    study_uid_hash: str
    class_volumes_ml: dict[str, float]
    num_instances: int
    labels: np.ndarray = field(repr=False)
    volume: CTVolume = field(repr=False)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: Clinical summary, consistency and SR; None when the graph ran without a quality step.
    quality: StudyQuality | None = field(default=None, repr=False)
    #: Items of the study the study-folder rule left out (hidden, DICOMDIR, not DICOM).
    skipped: tuple[SkippedFile, ...] = ()
    #: The applicability checks run before inference (reasons empty: inside the model's range).
    applicability: Applicability | None = field(default=None, repr=False)

    def outcome(
        self, manifest: ModelManifest, provider: str, stage_seconds: Mapping[str, float]
    ) -> StudyOutcome:
        """The study's typed outcome (``service.core.study_outcome``), which every outlet renders.

        ``stage_seconds`` is the caller's: the server adds the upload and its whole-call total,
        the MONAI Deploy app the graph's wall time.
        """
        quality = self.quality
        return StudyOutcome(
            study_uid_hash=self.study_uid_hash,
            class_volumes_ml=self.class_volumes_ml,
            num_instances=self.num_instances,
            model_name=manifest.name,
            model_version=manifest.version,
            provider=provider,
            stage_seconds=dict(stage_seconds),
            **StudyOutcome.digests(self.seg_bytes, quality.sr_bytes if quality else b""),
            clinical=quality.clinical if quality else None,
            consistency=quality.consistency if quality else None,
            flagged=quality.flagged if quality else False,
            applicability=self.applicability.outcome() if self.applicability else None,
            quality=quality.score.outcome() if quality and quality.score else None,
            density=quality.density_outcome if quality else None,
            under_reading=quality.under_reading_outcome if quality else None,
        )

    def segmented(self, outcome: StudyOutcome) -> SegmentedStudy | None:
        """What the quality monitor records of this study; None without a quality step."""
        if self.quality is None:
            return None
        return SegmentedStudy(outcome, self.labels, self.quality.geometry, self.volume.hu)


def summarise_study(
    volume: CTVolume,
    labels: np.ndarray,
    seg_bytes: bytes,
    manifest: ModelManifest,
    quality: StudyQuality | None = None,
    skipped: Sequence[SkippedFile] = (),
    applicability: Applicability | None = None,
) -> StudyResult:
    """Per-class volumes (mL, by class name) and the identifiers a log may show.

    The quality step already measured the volumes (one pass over the labels per class); they
    are counted here only when the graph ran without it.
    """
    if quality is not None:
        by_name = dict(quality.clinical.class_volumes_ml)
    else:
        foreground = manifest.foreground_classes
        volumes = class_volumes_ml(labels, volume.spacing_zyx, [c.index for c in foreground])
        by_name = {c.name: float(volumes[c.index]) for c in foreground}
    return StudyResult(
        seg_bytes=seg_bytes,
        study_uid_hash=uid_hash(str(volume.datasets[0].StudyInstanceUID)),
        class_volumes_ml=by_name,
        num_instances=len(volume.datasets),
        labels=labels,
        volume=volume,
        quality=quality,
        skipped=tuple(skipped),
        applicability=applicability,
    )
