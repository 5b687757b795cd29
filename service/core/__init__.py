"""The shared core of pulmoseg: what training and serving must agree on, and nothing else.

Manifest and class catalogue, preprocessing (2.5D slice context and the one in-plane resize),
segmentation metrics (Dice, VolDice, continuous Dice), domain errors, identifier hashing and
the progress-stage enum. It imports no torch, grpc, holoscan or onnxruntime (an import-linter
contract checks this), so both a serve-only install and the training package can depend on it.
"""
