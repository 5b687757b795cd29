"""Label values the phantom writes: positions in the class catalogue's default scheme.

Taken from :data:`service.core.classes.DEFAULT_CLASS_NAMES` so that phantom label maps, their
manifest and every model trained on them agree with the classes the service exports.
"""

from __future__ import annotations

from service.core.classes import DEFAULT_CLASS_NAMES

#: Label value (uint8) of each class name of the default scheme.
LABEL_OF: dict[str, int] = {name: value for value, name in enumerate(DEFAULT_CLASS_NAMES)}

BACKGROUND = LABEL_OF["background"]
LUNG = LABEL_OF["lung"]
GGO = LABEL_OF["ggo"]
CONSOLIDATION = LABEL_OF["consolidation"]
