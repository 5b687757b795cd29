"""The quality step of the study graph: clinical summary, consistency VolDice and the SR.

It sits after the SEG writer (it needs the SEG to reference it from the SR) and before the
result sink::

    series_to_volume ─volume─┐
    onnx_inference ──labels──┼─> quality ─quality─> study_result
    seg_writer ──────seg─────┘

``compute`` only receives and emits; the work is ``service.quality.assessment.assess_study``.
The consistency inference reuses the graph's warm predictor and honours cancellation; the same
pass measures the lesion entropy of the quality score (``service.quality.quality_score``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.deploy.core import Operator, OperatorSpec

from service import __version__
from service.app.operators import (
    APPLICABILITY,
    LABELS,
    NO_HOOKS,
    QUALITY,
    SEG,
    VOLUME,
    ProgressHooks,
)
from service.core.identifiers import uid_hash
from service.core.lung_field import manifest_confinement
from service.core.manifest import ModelManifest
from service.core.segmentation_metrics import class_volumes_ml
from service.predictor import Predictor
from service.quality.assessment import QualityConfig, assess_study
from service.quality.clinical import LESIONS
from service.quality.tta import EntropyRecordingPredictor

#: File name of the SR beside ``seg.dcm`` when the app writes to an output folder.
SR_FILE_NAME = "sr.dcm"


class QualityOperator(Operator):
    """Assesses the study; writes ``sr.dcm`` into ``output_folder`` when given one."""

    def __init__(
        self,
        fragment: Any,
        *args: Any,
        predictor: Predictor,
        manifest: ModelManifest,
        config: QualityConfig,
        output_folder: Path | None = None,
        hooks: ProgressHooks = NO_HOOKS,
        **kwargs: Any,
    ) -> None:
        self.predictor = predictor
        self.manifest = manifest
        self.config = config
        self.output_folder = output_folder
        self.hooks = hooks
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(VOLUME.name)
        spec.input(LABELS.name)
        spec.input(SEG.name)
        spec.input(APPLICABILITY.name)
        spec.output(QUALITY.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        volume = VOLUME.receive(op_input)
        labels = LABELS.receive(op_input)
        seg = SEG.receive(op_input)
        applicability = APPLICABILITY.receive(op_input)
        self.hooks.check_cancelled()
        classes = self.manifest.foreground_classes
        volumes = class_volumes_ml(labels, volume.spacing_zyx, [c.index for c in classes])
        lung_field = volume.lung_field or manifest_confinement(
            volume.hu, volume.spacing_zyx, self.manifest
        )
        quality = assess_study(
            study_hash=uid_hash(str(volume.datasets[0].StudyInstanceUID)),
            volume=volume,
            labels=labels,
            seg_bytes=seg,
            class_volumes_ml={c.name: float(volumes[c.index]) for c in classes},
            manifest=self.manifest,
            # The consistency pass's labels, plus the entropy of its lesion call (the quality
            # score's uncertainty signal) measured on the same batches: no extra inference.
            predict=EntropyRecordingPredictor(
                self.predictor,
                [c.index for c in classes if c.name in LESIONS],
                is_cancelled=self.hooks.is_cancelled,
            ),
            # The served labels are confined to the study's lung field when the model says so;
            # the transformed prediction, mapped back, is confined by the same field.
            confine=None if lung_field is None else lung_field.confine,
            provider=self.predictor.provider,
            config=self.config,
            software_version=__version__,
            applicability=applicability,
        )
        if self.output_folder is not None and quality.sr_bytes:
            folder = Path(self.output_folder)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / SR_FILE_NAME
            partial = target.with_suffix(".partial")
            try:
                partial.write_bytes(quality.sr_bytes)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
        QUALITY.emit(op_output, quality)
