"""The quality score's round trip through the store and the gRPC record message (the records
migrations are tested with the records package, tests/service/records)."""

from __future__ import annotations

import numpy as np
from test_quality_records import GEOMETRY, _record

from service.core.study_outcome import QualityOutcome
from service.grpc_api.quality_messages import record_message
from service.quality.records import QualityStore


def test_the_score_round_trips_through_the_store_and_the_record_message():
    store = QualityStore("sqlite://")
    quality = QualityOutcome(
        score=0.31,
        flagged=True,
        threshold=0.4,
        variant="with_tta",
        signals={"lung_field_dice": 0.9},
    )
    record = _record(1, quality=quality)
    store.save_study(record, np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY)
    back = store.get(record.study_hash)
    assert back.outcome.quality == quality
    assert back.outcome.review_required  # derived from the score's flag, also after reading
    message = record_message(back).quality
    assert (message.score, message.flagged, message.threshold) == (0.31, True, 0.4)
    assert message.variant == "with_tta"
    assert dict(message.signals) == {"lung_field_dice": 0.9}
    store.save_study(_record(2), np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY)
    assert not record_message(store.get(_record(2).study_hash)).HasField("quality")
    store.close()
