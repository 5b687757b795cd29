"""Per-study quality monitoring: label-free consistency, reference VolDice, clinical summary.

The plain functions here (transforms, consistency, clinical, reference, sr_writer) are tested
without a server; :mod:`service.quality.monitor` ties them to the records store
(:mod:`service.quality.records`) and the metrics (:mod:`service.observability.quality_metrics`).
"""
