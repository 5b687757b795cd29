"""Scoring models: ONNX evaluation on volumes and slices, reports, paired statistics,
training-time validation through the shared predictor, SEG read-back for the demo.
"""
