"""The voxel grid of a segmented study, kept so that a later reference SEG can be placed on it.

Only geometry is kept (shape, spacing, orientation, origin) plus a hash of the Frame of Reference
UID, never a raw UID: the record must not link back to a patient, yet a reference from another
frame of reference must still be told apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.core.identifiers import uid_hash


@dataclass(frozen=True)
class StudyGeometry:
    """The (z, y, x) grid of a study; see ``service.dicom.volume.CTVolume`` for the axes."""

    shape: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    origin: tuple[float, float, float]
    row_cosine: tuple[float, float, float]
    column_cosine: tuple[float, float, float]
    slice_normal: tuple[float, float, float]
    frame_of_reference_hash: str

    @classmethod
    def from_volume(cls, volume: Any) -> StudyGeometry:
        """From a ``CTVolume`` (duck-typed so this module stays free of DICOM decoding)."""

        def vec(v: Any) -> tuple[float, float, float]:
            a = np.asarray(v, dtype=np.float64).reshape(3)
            return (float(a[0]), float(a[1]), float(a[2]))

        shape = tuple(int(v) for v in volume.hu.shape)
        return cls(
            shape=(shape[0], shape[1], shape[2]),
            spacing_zyx=vec(volume.spacing_zyx),
            origin=vec(volume.origin),
            row_cosine=vec(volume.row_cosine),
            column_cosine=vec(volume.column_cosine),
            slice_normal=vec(volume.slice_normal),
            frame_of_reference_hash=uid_hash(str(volume.frame_of_reference_uid)),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudyGeometry:
        raw = json.loads(text)
        return cls(
            shape=tuple(int(v) for v in raw["shape"]),  # type: ignore[arg-type]
            spacing_zyx=tuple(float(v) for v in raw["spacing_zyx"]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in raw["origin"]),  # type: ignore[arg-type]
            row_cosine=tuple(float(v) for v in raw["row_cosine"]),  # type: ignore[arg-type]
            column_cosine=tuple(float(v) for v in raw["column_cosine"]),  # type: ignore[arg-type]
            slice_normal=tuple(float(v) for v in raw["slice_normal"]),  # type: ignore[arg-type]
            frame_of_reference_hash=str(raw["frame_of_reference_hash"]),
        )
