"""The class catalogue: every class a pulmoseg model can output, with its DICOM codes and colour.

One list for training (class names in configs, phantom labels, dataset masks), export (the
manifest's coded classes) and the service (SEG segment descriptions, reference matching). A
class unknown here cannot be exported, because a SEG without a code is useless to a PACS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.core.settings_base import did_you_mean


@dataclass(frozen=True)
class CodedConcept:
    """A coded concept as DICOM needs it (scheme designator, value, meaning)."""

    scheme: str
    value: str
    meaning: str


@dataclass(frozen=True)
class ClassInfo:
    """One output class of the network; index 0 is always background and never a segment."""

    index: int
    name: str
    category: CodedConcept
    property_type: CodedConcept
    color_rgb: tuple[int, int, int]


ANATOMICAL_STRUCTURE = CodedConcept("SCT", "91723000", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL = CodedConcept("SCT", "49755003", "Morphologically Abnormal Structure")
BACKGROUND = CodedConcept("DCM", "125040", "Background")

#: Default label scheme of pulmoseg models: 0 background, 1 lung, 2 GGO, 3 consolidation.
DEFAULT_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", ANATOMICAL_STRUCTURE, BACKGROUND, (0, 0, 0)),
    ClassInfo(
        1, "lung", ANATOMICAL_STRUCTURE, CodedConcept("SCT", "39607008", "Lung"), (128, 174, 128)
    ),
    ClassInfo(
        2,
        "ggo",
        MORPHOLOGICALLY_ABNORMAL,
        CodedConcept("DCM", "112120", "Ground glass opacity"),
        (241, 214, 145),
    ),
    ClassInfo(
        3,
        "consolidation",
        MORPHOLOGICALLY_ABNORMAL,
        CodedConcept("SCT", "95436008", "Lung consolidation"),
        (216, 101, 79),
    ),
)


#: Names of the default scheme, by label value.
DEFAULT_CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in DEFAULT_CLASSES)
#: Lesion classes: their union is "infection" in evaluation reports.
LESION_CLASS_NAMES: tuple[str, ...] = ("ggo", "consolidation")
#: Mask classes of 2-D lesion-only datasets such as COVID-SemiSeg (raw value = position).
LESION_MASK_CLASS_NAMES: tuple[str, ...] = ("background", *LESION_CLASS_NAMES)


def catalogue_class(name: str) -> ClassInfo:
    """The catalogue entry named ``name``; an unknown name gets a "did you mean" hint."""
    known = {c.name: c for c in DEFAULT_CLASSES}
    if name in known:
        return known[name]
    raise ValueError(
        f"Class name '{name}' has no DICOM code in pulmoseg's catalogue (known: "
        f"{', '.join(sorted(known))}).{did_you_mean(name, known)}"
    )


def classes_for(names: Sequence[str]) -> list[ClassInfo]:
    """Coded classes for ``names`` in index order (index = position in ``names``)."""
    result = []
    for index, name in enumerate(names):
        entry = catalogue_class(name)
        result.append(ClassInfo(index, name, entry.category, entry.property_type, entry.color_rgb))
    return result
