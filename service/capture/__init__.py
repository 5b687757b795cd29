"""Opt-in capture of the service's own studies as a training dataset (``capture_dir``).

Off by default: without ``capture_dir`` nothing is kept. See :mod:`service.capture.capture`
for what is kept when, and :mod:`service.capture.dataset` for the folder's layout.
"""

from service.capture.capture import CaptureConfig, StudyCapture, open_capture

__all__ = ["CaptureConfig", "StudyCapture", "open_capture"]
