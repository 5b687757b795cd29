"""Per-study quality monitoring: label-free consistency and quality score, reference VolDice,
clinical summary.

The plain functions here (transforms, consistency, clinical, reference, sr_writer, score_signals,
quality_score) are tested without a server; :mod:`service.quality.monitor` ties them to the
records store (:mod:`service.quality.records`, on the database of :mod:`service.records`) and
the metrics (:mod:`service.observability.quality_metrics`).
"""
