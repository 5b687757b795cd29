"""Opt-in capture of the service's own studies as a training dataset (``capture.dir``).

Off by default: without ``capture.dir`` nothing is kept. See :mod:`service.capture.capture`
for what is kept when, and :mod:`service.capture.dataset` for the folder's layout.
"""

from service.capture.capture import StudyCapture, open_capture
from service.capture.settings import CaptureSettings

__all__ = ["CaptureSettings", "StudyCapture", "open_capture"]
