"""The model manifest: the contract between training and the service.

Export writes it as JSON into the ONNX file's metadata (key :data:`MANIFEST_KEY`); the service
reads everything it needs (classes, codes, colours, slice context, HU window) from there, so no
training code is needed at serving time. The JSON schema lives in
``protos/pulmoseg/v1/model_manifest.schema.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.core.classes import ClassInfo, CodedConcept
from service.core.errors import ModelError

MANIFEST_KEY = "pulmoseg.manifest"
MANIFEST_SCHEMA_VERSION = 1
#: Slice thickness (mm) a model is taken to be made for when its manifest does not say:
#: chest CT reconstructions from thin (0.5-1.25 mm) to standard (5 mm).
DEFAULT_SLICE_THICKNESS_MM_RANGE = (0.5, 5.0)
#: In-plane pixel spacing (mm) likewise: a 512² matrix over a 200-500 mm field of view.
DEFAULT_PIXEL_SPACING_MM_RANGE = (0.4, 1.0)


@dataclass
class ModelManifest:
    """Everything the service needs to run an exported model and describe its output."""

    name: str
    version: str
    classes: list[ClassInfo]
    #: Number of adjacent slices stacked as input channels (2.5D); odd, centre slice predicted.
    slice_context: int
    #: Intensity window baked into the graph: input HU clipped to [min, max] then scaled to [0, 1].
    hu_window: tuple[float, float]
    #: In-plane size the network was trained on; other sizes are resampled to it and back.
    input_size: tuple[int, int]
    #: Axes order of the input the network expects; the service reorients to it.
    orientation: str = "axial, rows=anterior->posterior, columns=right->left (LPS)"
    training_summary: dict[str, Any] = field(default_factory=dict)
    validation_voldice: dict[str, float] = field(default_factory=dict)
    created: str = ""
    schema_version: int = MANIFEST_SCHEMA_VERSION
    #: Confine lung and lesion labels to this in-plane distance (mm) of the aerated lungs
    #: (``service.core.lung_field.confine_to_lung_field``); for models trained on lung slices
    #: only, which never saw the abdomen or the table. None: no confinement.
    lung_field_margin_mm: float | None = None
    #: Slice thickness (mm, [min, max]) the model was trained for; studies outside are flagged
    #: (``service.quality.applicability``). None: DEFAULT_SLICE_THICKNESS_MM_RANGE.
    slice_thickness_mm_range: tuple[float, float] | None = None
    #: In-plane pixel spacing (mm, [min, max]) likewise. None: DEFAULT_PIXEL_SPACING_MM_RANGE.
    pixel_spacing_mm_range: tuple[float, float] | None = None

    @property
    def foreground_classes(self) -> list[ClassInfo]:
        """Classes that become segments (all but background)."""
        return [c for c in self.classes if c.index != 0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"Model manifest is not valid JSON: {exc}") from exc
        try:
            if raw.get("schema_version") != MANIFEST_SCHEMA_VERSION:
                raise ModelError(
                    f"Model manifest schema_version {raw.get('schema_version')!r} is not "
                    f"supported; this service reads version {MANIFEST_SCHEMA_VERSION}."
                )
            classes = [
                ClassInfo(
                    index=int(c["index"]),
                    name=str(c["name"]),
                    category=CodedConcept(**c["category"]),
                    property_type=CodedConcept(**c["property_type"]),
                    color_rgb=tuple(int(v) for v in c["color_rgb"]),  # type: ignore[arg-type]
                )
                for c in raw["classes"]
            ]
            manifest = cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                classes=classes,
                slice_context=int(raw["slice_context"]),
                hu_window=(float(raw["hu_window"][0]), float(raw["hu_window"][1])),
                input_size=(int(raw["input_size"][0]), int(raw["input_size"][1])),
                orientation=str(raw.get("orientation", "")),
                training_summary=dict(raw.get("training_summary", {})),
                validation_voldice={
                    k: float(v) for k, v in raw.get("validation_voldice", {}).items()
                },
                created=str(raw.get("created", "")),
                lung_field_margin_mm=(
                    None
                    if raw.get("lung_field_margin_mm") is None
                    else float(raw["lung_field_margin_mm"])
                ),
                slice_thickness_mm_range=_optional_range(raw.get("slice_thickness_mm_range")),
                pixel_spacing_mm_range=_optional_range(raw.get("pixel_spacing_mm_range")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"Model manifest is incomplete or malformed: {exc!r}") from exc
        manifest.validate()
        return manifest

    def validate(self) -> None:
        """Reject manifests the service could not honour, with a message naming the field."""
        indices = [c.index for c in self.classes]
        if indices != list(range(len(self.classes))) or len(indices) < 2:
            raise ModelError(
                "Manifest field 'classes' must list indices 0..N-1 (N >= 2) in order, "
                f"got {indices}."
            )
        if self.slice_context < 1 or self.slice_context % 2 == 0:
            raise ModelError(
                "Manifest field 'slice_context' must be a positive odd number, "
                f"got {self.slice_context}."
            )
        if not self.hu_window[0] < self.hu_window[1]:
            raise ModelError(
                f"Manifest field 'hu_window' must be (min, max), got {self.hu_window}."
            )
        if self.lung_field_margin_mm is not None and not self.lung_field_margin_mm >= 0:
            raise ModelError(
                "Manifest field 'lung_field_margin_mm' must be >= 0 or absent, "
                f"got {self.lung_field_margin_mm}."
            )
        for name in ("slice_thickness_mm_range", "pixel_spacing_mm_range"):
            value = getattr(self, name)
            if value is not None and not 0 < value[0] <= value[1]:
                raise ModelError(
                    f"Manifest field '{name}' must be [min, max] mm with 0 < min <= max, or "
                    f"absent, got {list(value)}."
                )


def _optional_range(value: Any) -> tuple[float, float] | None:
    """A [min, max] pair from JSON, or None when absent."""
    if value is None:
        return None
    if len(value) != 2:
        raise ValueError(f"a [min, max] range needs 2 numbers, got {value!r}")
    return (float(value[0]), float(value[1]))


def read_model_manifest(model_path: str | Path) -> ModelManifest:
    """Read the manifest from an ONNX file's metadata without loading the weights' runtime."""
    import onnx

    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"Model file '{path}' does not exist.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX files
        raise ModelError(f"Model file '{path}' is not a readable ONNX model: {exc}") from exc
    for prop in model.metadata_props:
        if prop.key == MANIFEST_KEY:
            return ModelManifest.from_json(prop.value)
    raise ModelError(
        f"Model file '{path}' has no '{MANIFEST_KEY}' metadata: export it with pulmoseg."
    )
