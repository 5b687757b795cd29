"""Options as ``StrEnum`` s: accepted as ``Enum | str``, converted once where they enter.

A bare string travels unchecked until some layer deep down rejects it, far from the argument
the user typed. An :class:`Option` is checked where it enters (a CLI flag, a setting, an API
argument) and travels as the enum from there on; MONAI's ``LossReduction`` is the model. Every
option of the service and of training (whose config fields are typed with them,
``training.config``) shares :meth:`Option.parse`, so a typo gets the same message everywhere:
the argument, the value, the choices and a "did you mean" hint (from the settings' own
``did_you_mean``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

__all__ = ["ApplicabilityPolicy", "Option", "SegmentationType"]


class Option(StrEnum):
    """Base of the project's options; members compare equal to their values (``StrEnum``).

    Matching ignores case and surrounding blanks: "labelmap" and " LABELMAP" are LABELMAP,
    because users type options in shells and YAML files, where case is a matter of habit.
    """

    @classmethod
    def parse(cls, value: Self | str, what: str | None = None) -> Self:
        """``value`` as a member of this option.

        ``what`` names the value in messages (default "Argument '<snake_case class name>'"),
        e.g. "Setting 'segmentation_type'". A wrong type raises ``TypeError``, an unknown value
        ``ValueError`` listing the choices, with a hint for a near miss.
        """
        if isinstance(value, cls):
            return value
        what = what or f"Argument '{_snake_case(cls.__name__)}'"
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a {cls.__name__} or str, got {type(value).__name__}.")
        text = value.strip().casefold()
        for member in cls:
            if member.value.casefold() == text:
                return member
        # Imported here: the settings machinery loads pydantic, which `pulmoseg --help` (whose
        # parser lists the options) should not pay for.
        from service.core.settings_base import did_you_mean

        choices = [member.value for member in cls]
        listed = ", ".join(f"'{choice}'" for choice in choices)
        raise ValueError(
            f"{what} must be one of {listed}, got {value!r}."
            f"{did_you_mean(value.strip(), choices, ignore_case=True)}"
        )


class SegmentationType(Option):
    """How the DICOM-SEG stores the labels (its ``SegmentationType`` attribute).

    BINARY (one bit plane per segment) is read by every viewer, so it is the default; LABELMAP
    (DICOM 2024, one label image) is smaller for receivers that read it. FRACTIONAL is not an
    option: the model outputs hard labels, not fractions.
    """

    BINARY = "BINARY"
    LABELMAP = "LABELMAP"


def _snake_case(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class ApplicabilityPolicy(Option):
    """What the service does with a study outside the model's declared range
    (``service.quality.applicability``): segment it and flag it, or refuse it."""

    SEGMENT_AND_FLAG = "segment_and_flag"
    REFUSE = "refuse"
