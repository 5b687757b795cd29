"""The applicability step of the study graph: checks the CT before the model sees it.

It sits between the volume and inference, and inference takes its volume from here, so a study
refused by the ``refuse`` policy costs no inference::

    series_to_volume ─volume─> applicability ─volume──────> onnx_inference
                                             └applicability─> quality, study_result

``compute`` only receives and emits; the work is ``service.quality.applicability.check_volume``.
"""

from __future__ import annotations

import logging
from typing import Any

from monai.deploy.core import Operator, OperatorSpec

from service.app.operators import APPLICABILITY, NO_HOOKS, VOLUME, ProgressHooks
from service.core.identifiers import uid_hash
from service.core.manifest import ModelManifest
from service.core.options import ApplicabilityPolicy
from service.quality.applicability import applicability_error, check_volume

log = logging.getLogger(__name__)


class ApplicabilityOperator(Operator):
    """Runs the applicability checks; under ``refuse`` a study outside the range stops here."""

    def __init__(
        self,
        fragment: Any,
        *args: Any,
        manifest: ModelManifest,
        policy: ApplicabilityPolicy = ApplicabilityPolicy.SEGMENT_AND_FLAG,
        hooks: ProgressHooks = NO_HOOKS,
        **kwargs: Any,
    ) -> None:
        self.manifest = manifest
        self.policy = ApplicabilityPolicy.parse(policy, "Argument 'policy'")
        self.hooks = hooks
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(VOLUME.name)
        spec.output(VOLUME.name)
        spec.output(APPLICABILITY.name)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        volume = VOLUME.receive(op_input)
        self.hooks.check_cancelled()
        result = check_volume(volume, self.manifest)
        if not result.applicable:
            # Study hash and measured values only: nothing here identifies the patient.
            log.warning(
                "study %s outside the model's range (%s): %s",
                uid_hash(str(volume.datasets[0].StudyInstanceUID)),
                self.policy.value,
                result.describe(),
            )
            if self.policy is ApplicabilityPolicy.REFUSE:
                raise applicability_error(result, self.manifest.name)
        VOLUME.emit(op_output, volume)
        APPLICABILITY.emit(op_output, result)
