"""A PNG preview of a segmentation: key axial slices with the coloured overlay and the figures.

A quick look is what tells a user whether a SEG is plausible before opening a viewer (as
TotalSegmentator's ``--preview`` does). The picture is built from what a receiver gets: the
uploaded CT files and the returned SEG (read back with highdicom), with the segment colours
and labels the SEG itself declares, so it shows the file, not what we meant to write. The
caption adds what the summary says about the study: the CT grade, the label-free density bands
of the whole lung envelope and, when it fired, the under-reading flag.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from service.core.study_outcome import ClinicalOutcome
from service.dicom.seg_reader import read_seg_labels
from service.dicom.study_input import parse_instance, select_ct_series
from service.dicom.volume import CTVolume, series_to_volume

#: Lung window (HU) for the grey background: lesions and lung parenchyma both visible.
WINDOW_HU = (-1350.0, 150.0)
TILE_PX = 320
OVERLAY_ALPHA = 0.45
MAX_SLICES = 3
#: The whole envelope's bands in the caption, with their short names.
CAPTION_BANDS = (
    ("well_aerated", "well-aerated"),
    ("poorly_aerated", "poorly aerated"),
    ("non_aerated", "non-aerated"),
    ("compromised", "compromised"),
)


def _segments(seg: pydicom.Dataset) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """Segment number -> (label, RGB colour) as the SEG declares them."""
    out: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for item in seg.SegmentSequence:
        lab = item.get("RecommendedDisplayCIELabValue")
        rgb = hd.color.CIELabColor.from_dicom_value(lab).to_rgb(clip=True) if lab else (255, 0, 0)
        red, green, blue = (int(c) for c in rgb)
        out[int(item.SegmentNumber)] = (str(item.SegmentLabel), (red, green, blue))
    return out


def key_slices(labels: np.ndarray, count: int = MAX_SLICES) -> list[int]:
    """Slices worth looking at: where the rarest present segments are largest, then the most
    foreground, then the middle — distinct and in head-to-foot order."""
    per_class = {int(k): (labels == k).sum(axis=(1, 2)) for k in np.unique(labels) if int(k) != 0}
    chosen: list[int] = []
    for k in sorted(per_class, key=lambda k: int(per_class[k].sum())):  # rarest first
        z = int(np.argmax(per_class[k]))
        if z not in chosen:
            chosen.append(z)
    if per_class:
        z = int(np.argmax((labels > 0).sum(axis=(1, 2))))
        if z not in chosen:
            chosen.append(z)
    middle = labels.shape[0] // 2
    if middle not in chosen:
        chosen.append(middle)
    return sorted(chosen[:count])


def _tile(
    hu: np.ndarray, labels: np.ndarray, colours: dict[int, tuple[int, int, int]]
) -> Image.Image:
    low, high = WINDOW_HU
    grey = np.clip((hu - low) / (high - low), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for k, colour in colours.items():
        mask = labels == k
        rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * np.asarray(colour, float)
    image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    scale = TILE_PX / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def caption_lines(summary: dict[str, Any]) -> list[str]:
    """The summary's grade, density bands and under-reading flag as caption lines (none of
    them when the summary lacks the part)."""
    lines = []
    clinical = summary.get("clinical") or {}
    if clinical.get("severity_grade"):  # worded by the schema, as `pulmoseg segment` prints it
        lines.append(ClinicalOutcome.model_validate(clinical).describe())
    density = summary.get("density") or {}
    whole = next((r for r in density.get("regions", []) if r.get("region") == "whole"), None)
    if whole:
        fractions = {b["band"]: b["fraction"] for b in whole.get("bands", [])}
        bands = ", ".join(
            f"{label} {100 * fractions[name]:.1f} %"
            for name, label in CAPTION_BANDS
            if name in fractions
        )
        lines.append(f"density of the lung envelope ({density['envelope_ml']:,.0f} mL): {bands}")
    verdict = summary.get("under_reading") or {}
    if verdict.get("flagged"):
        lines.append(
            f"REVIEW: abnormal density {100 * verdict['density_fraction']:.1f} % of the "
            f"envelope vs lesions {100 * verdict['lesion_fraction']:.1f} % (under-reading)"
        )
    return lines


def render_preview(
    volume: CTVolume, labels: np.ndarray, seg: pydicom.Dataset, summary: dict[str, Any]
) -> Image.Image:
    """The preview picture: tiles of the key slices, then a legend with the volumes and the
    caption lines (:func:`caption_lines`)."""
    segments = _segments(seg)
    colours = {k: rgb for k, (_, rgb) in segments.items()}
    slices = key_slices(labels)
    tiles = [_tile(volume.hu[z], labels[z], colours) for z in slices]
    captions = caption_lines(summary)
    gap, text_h = 8, 22 + 20 * (len(segments) + 2 + len(captions))
    small, large = _font(14), _font(16)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((measure.textlength(line, font=small) for line in captions), default=0)
    width = sum(t.width for t in tiles) + gap * (len(tiles) + 1)
    height = max(t.height for t in tiles) + 2 * gap + 24 + text_h
    canvas = Image.new("RGB", (max(width, 480, int(text_w) + 2 * gap), height), (16, 16, 16))
    draw = ImageDraw.Draw(canvas)
    x = gap
    for z, tile in zip(slices, tiles, strict=True):
        canvas.paste(tile, (x, gap))
        draw.text(
            (x, gap + tile.height + 4),
            f"slice {z + 1}/{labels.shape[0]}",
            (200, 200, 200),
            font=small,
        )
        x += tile.width + gap
    y = gap + max(t.height for t in tiles) + 30
    model = f"{summary.get('model_name', '')} {summary.get('model_version', '')}".strip()
    draw.text(
        (gap, y), f"pulmoseg preview - model {model or 'unknown'}", (240, 240, 240), font=large
    )
    y += 24
    volumes = summary.get("class_volumes_ml", {})
    for _number, (name, rgb) in sorted(segments.items()):
        draw.rectangle((gap, y + 3, gap + 12, y + 15), fill=rgb)
        ml = volumes.get(name)
        figure = f"{ml:,.1f} mL" if isinstance(ml, int | float) else "—"
        draw.text((gap + 20, y), f"{name}: {figure}", (230, 230, 230), font=small)
        y += 20
    for line in captions:
        colour = (255, 190, 90) if line.startswith("REVIEW") else (230, 230, 230)
        draw.text((gap, y), line, colour, font=small)
        y += 20
    voxels = int(np.prod(labels.shape))
    draw.text(
        (gap, y),
        f"{labels.shape[0]} slices, {labels.shape[1]}x{labels.shape[2]} px, {voxels:,} voxels",
        (160, 160, 160),
        font=small,
    )
    return canvas


def write_preview(
    study_files: Sequence[Path], seg_bytes: bytes, summary: dict[str, Any], out: str | Path
) -> Path:
    """Render the preview of a returned SEG over the uploaded files and save it as PNG."""
    datasets = [parse_instance(Path(p).read_bytes(), name=Path(p).name) for p in study_files]
    volume = series_to_volume(select_ct_series(datasets))
    seg = pydicom.dcmread(io.BytesIO(seg_bytes))
    labels = read_seg_labels(seg_bytes, [str(ds.SOPInstanceUID) for ds in volume.datasets])
    image = render_preview(volume, labels, seg, summary)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")
    return target
