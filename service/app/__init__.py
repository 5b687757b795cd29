"""The MONAI Deploy application of pulmoseg: one study in, a DICOM-SEG out.

* ``application`` — :class:`LungSegmentationApp`, the Application that composes the operators;
* ``operators`` — the operators, passing data through declared ports;
* ``applicability_operator`` — the input checks before inference (flag or refuse a study outside
  the model's declared range; ``service.quality.applicability``);
* ``study_result`` — what a study yields (SEG bytes, per-class volumes, timings);
* ``study_runner`` — :class:`StudyRunner`: the warm predictor plus one graph per study, the plain
  call behind both the gRPC server and the command line;
* ``warm_up`` — the synthetic study a model segments before it serves (or is refused);
* ``memory_release`` — glibc's mmap threshold, so a finished study's memory goes back;
* ``__main__`` — ``python -m service.app -i DICOM_DIR -o OUT_DIR -m model.onnx``, also the entry
  point of the MONAI Application Package (``app.yaml``).

Importing this package loads nothing heavy; import the submodules you need.
"""
