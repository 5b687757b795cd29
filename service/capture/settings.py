"""The ``capture`` settings group: whether and how served studies are kept as training data.

The group is what :class:`~service.capture.capture.StudyCapture` runs on, so the server hands
it over as it is (no copy into a second type).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from service.core.settings_base import AtLeastOne, EnvSettingsModel, Positive

__all__ = ["CaptureSettings"]


class CaptureSettings(EnvSettingsModel):
    """Opt-in capture (service.capture). Unset ``dir`` (the default): nothing is ever kept."""

    key_prefix: ClassVar[str] = "capture."

    #: A study whose reference SEG is submitted becomes a labeled, de-identified case in this
    #: folder (a dataset with manifest.json).
    dir: Path | None = None
    #: Also keep every segmented study as an unlabeled case.
    unlabeled: bool = False
    #: Captured cases older than this many days are deleted (checked on every capture).
    retention_days: Positive = 30.0
    #: At most this many captured cases are kept; beyond it the oldest are deleted.
    max_studies: AtLeastOne = 500
    #: Without ``unlabeled``, a segmented study's volume waits this long (outside the dataset,
    #: in <dir>/pending) for its reference, then is deleted.
    pending_hours: Positive = 24.0

    @property
    def enabled(self) -> bool:
        return self.dir is not None
