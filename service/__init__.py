"""pulmoseg inference service: MONAI Deploy operators, ONNX Runtime, DICOM-SEG, gRPC."""

__version__ = "0.1.0"
