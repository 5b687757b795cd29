"""DICOM in and out: study folders, instance loading and CT series selection, identifier
repair, the HU volume, the DICOM-SEG writer (with its source policy and fast sequence encoding),
the SEG reader and the preview picture. Plain functions over pydicom/highdicom; no gRPC, no graph.
"""
