"""Progress events of the API: ``ProgressStage`` <-> ``pulmoseg.v1.Stage``, and their pacing.

The stages are declared once in ``service.core.progress.ProgressStage``; the proto declares the
same ones as ``STAGE_<NAME>`` (``tests/service/grpc_api/test_progress.py`` checks both lists
agree). :class:`ProgressRelay` turns the pipeline's per-stage fractions into the events a
client sees: in stage order, with a monotone overall fraction, and thinned out so a large study
does not send thousands of messages.
"""

from __future__ import annotations

from typing import cast

from service.core.progress import ProgressStage, overall_fraction
from service.grpc_api import segmentation_pb2 as pb2

_PREFIX = "STAGE_"
#: Smallest change of a stage's own fraction worth an event (first and last always go out).
DEFAULT_STEP = 0.05


def stage_to_proto(stage: ProgressStage | str) -> pb2.Stage:
    """The ``pulmoseg.v1.Stage`` number of ``stage``."""
    return cast(pb2.Stage, pb2.Stage.Value(_PREFIX + ProgressStage(stage).name))


def stage_from_proto(value: int) -> ProgressStage:
    """The ``ProgressStage`` of a ``pulmoseg.v1.Stage`` number; ValueError for unknown ones."""
    try:
        name = pb2.Stage.Name(value)
    except ValueError:
        raise ValueError(
            f"Argument 'value' must be a pulmoseg.v1.Stage number, got {value}."
        ) from None
    try:
        return ProgressStage[name.removeprefix(_PREFIX)]
    except KeyError:
        raise ValueError(
            f"Argument 'value' must name a progress stage, got {name} ({value})."
        ) from None


class ProgressRelay:
    """Decides which progress events go out; never emits a stage or fraction that goes back.

    ``event`` returns the ``Progress`` message to send, or None when the event is skipped: an
    earlier stage than one already reported, or too small a step within the current stage.
    """

    def __init__(self, step: float = DEFAULT_STEP) -> None:
        if not 0.0 <= step < 1.0:
            raise ValueError(f"Argument 'step' must be in [0, 1), got {step}.")
        self.step = step
        self._order = {stage: i for i, stage in enumerate(ProgressStage)}
        self._stage: ProgressStage | None = None
        self._stage_fraction = 0.0
        self._overall = 0.0

    @property
    def overall(self) -> float:
        """The overall fraction last sent (0 before the first event)."""
        return self._overall

    def event(self, stage: ProgressStage | str, fraction: float) -> pb2.Progress | None:
        stage = ProgressStage(stage)
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self._stage is not None:
            if self._order[stage] < self._order[self._stage]:
                return None  # an earlier stage: never go back
            if stage is self._stage:
                gain = fraction - self._stage_fraction
                if gain <= 0.0 or (fraction < 1.0 and gain < self.step):
                    return None  # no news, or too small a step (the end always goes out)
        overall = max(overall_fraction(stage, fraction), self._overall)
        self._stage, self._stage_fraction, self._overall = stage, fraction, overall
        return pb2.Progress(stage=stage_to_proto(stage), stage_fraction=fraction, fraction=overall)
