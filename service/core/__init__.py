"""The shared core of pulmoseg: what training and serving must agree on, and nothing else.

Manifest and class catalogue, preprocessing (2.5D slice context and the one in-plane resize),
segmentation metrics (Dice, VolDice, continuous Dice), domain errors, identifier hashing, the
progress-stage enum, the typed-settings base (``settings_base``, pydantic) that the service
settings and the training config share, the run-folder layout training writes and the jobs
worker reads (``run_folder``), and the records database's table names (``records_tables``).
It imports no torch, grpc, holoscan or onnxruntime (an import-linter contract checks this), so
both a serve-only install and the training package can depend on it.
"""
