"""One list of stages: the proto's ``pulmoseg.v1.Stage`` and ``ProgressStage`` agree; pacing."""

from __future__ import annotations

import pytest

from service.core.progress import ProgressStage, overall_fraction
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api.progress import ProgressRelay, stage_from_proto, stage_to_proto


def test_proto_stage_enum_and_progress_stage_agree() -> None:
    declared = [(v.name, v.number) for v in pb2.Stage.DESCRIPTOR.values]
    assert declared[0] == ("STAGE_UNSPECIFIED", 0)
    expected = [(f"STAGE_{s.name}", i) for i, s in enumerate(ProgressStage, start=1)]
    assert declared[1:] == expected  # same names, same order, numbers 1..N
    assert pb2.Progress.DESCRIPTOR.fields_by_name["stage"].enum_type is pb2.Stage.DESCRIPTOR


@pytest.mark.parametrize("stage", list(ProgressStage))
def test_stage_round_trip(stage: ProgressStage) -> None:
    assert stage_from_proto(stage_to_proto(stage)) is stage
    assert stage_to_proto(stage.value) == stage_to_proto(stage)


def test_unknown_or_unspecified_stage_numbers_are_rejected() -> None:
    with pytest.raises(ValueError, match="must name a progress stage, got STAGE_UNSPECIFIED"):
        stage_from_proto(pb2.STAGE_UNSPECIFIED)
    with pytest.raises(ValueError, match="must be a pulmoseg.v1.Stage number, got 99"):
        stage_from_proto(99)


def test_relay_is_monotone_thinned_and_never_goes_back() -> None:
    relay = ProgressRelay(step=0.1)
    inputs = [
        (ProgressStage.RECEIVING, 0.0),
        (ProgressStage.RECEIVING, 0.05),  # too small a step
        (ProgressStage.RECEIVING, 0.5),
        (ProgressStage.RECEIVING, 0.4),  # backwards
        (ProgressStage.RECEIVING, 1.0),
        (ProgressStage.RECEIVING, 1.0),  # repeated
        (ProgressStage.INFERENCE, 0.0),  # stages may be skipped
        (ProgressStage.PARSING, 1.0),  # an earlier stage
        (ProgressStage.INFERENCE, 1.0),
        (ProgressStage.DONE, 1.0),
    ]
    sent = [relay.event(s, f) for s, f in inputs]
    kept = [(stage_from_proto(p.stage), p.stage_fraction) for p in sent if p is not None]
    assert kept == [
        (ProgressStage.RECEIVING, 0.0),
        (ProgressStage.RECEIVING, 0.5),
        (ProgressStage.RECEIVING, 1.0),
        (ProgressStage.INFERENCE, 0.0),
        (ProgressStage.INFERENCE, 1.0),
        (ProgressStage.DONE, 1.0),
    ]
    overall = [p.fraction for p in sent if p is not None]
    assert overall == sorted(overall) and overall[-1] == 1.0
    assert overall[3] == pytest.approx(overall_fraction(ProgressStage.INFERENCE, 0.0))
    assert relay.overall == 1.0


def test_relay_rejects_a_bad_step() -> None:
    with pytest.raises(ValueError, match=r"'step' must be in \[0, 1\), got 1.5"):
        ProgressRelay(step=1.5)
