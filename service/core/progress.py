"""The stages a study passes through, in order: one enum for the pipeline, the API and clients.

The gRPC API declares the same names (``pulmoseg.v1.Stage``); a test checks that both agree, so
a client never receives a stage the proto does not declare. Overall progress is monotone: each
stage owns a fixed share of the whole, and :func:`overall_fraction` maps a stage's own fraction
into it.
"""

from __future__ import annotations

from enum import StrEnum


class ProgressStage(StrEnum):
    """Pipeline stages in execution order (the order of declaration is the order of events)."""

    RECEIVING = "receiving"
    PARSING = "parsing"
    SELECTING = "selecting"
    VOLUME = "volume"
    INFERENCE = "inference"
    WRITING = "writing"
    DONE = "done"


#: Share of the whole job each stage represents (inference dominates on every machine).
STAGE_WEIGHTS: dict[ProgressStage, float] = {
    ProgressStage.RECEIVING: 0.10,
    ProgressStage.PARSING: 0.10,
    ProgressStage.SELECTING: 0.02,
    ProgressStage.VOLUME: 0.05,
    ProgressStage.INFERENCE: 0.65,
    ProgressStage.WRITING: 0.08,
    ProgressStage.DONE: 0.0,
}


def overall_fraction(stage: ProgressStage | str, fraction: float) -> float:
    """Fraction of the whole job done when ``stage`` is ``fraction`` done (0..1, monotone)."""
    stage = ProgressStage(stage)
    fraction = min(max(float(fraction), 0.0), 1.0)
    done = 0.0
    for s in ProgressStage:
        if s is stage:
            if s is ProgressStage.DONE:
                return 1.0
            return min(1.0, done + STAGE_WEIGHTS[s] * fraction)
        done += STAGE_WEIGHTS[s]
    raise AssertionError("unreachable: every ProgressStage is in the loop")
