"""From checkpoints to the hand-over file: ONNX export (manifest in the metadata, parity-checked),
int8 quantisation and a Triton model repository.
"""
