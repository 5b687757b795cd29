"""Training data: DICOM/NIfTI volumes, 2D slice folders, their preparation into HU, samplers,
augmentation and splits, and the data source that hands a stage its batches.
"""
