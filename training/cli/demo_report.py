"""The demo's result table: per class VolDice, the volumes found and expected, and why a score
is low or undefined.

A bare "consolidation VolDice 0.000" reads as a broken product. It usually means something
specific: the class is absent from the study, the model found none of it, or the model had
little of it to learn from in a few minutes of training. The table says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.segmentation_metrics import dice

#: Below this share of the training data's lesion voxels a class counts as rare.
RARE_SHARE = 0.25
#: Below this VolDice a lesion class is called weak in the note.
WEAK_VOLDICE = 0.5


@dataclass(frozen=True)
class ClassResult:
    name: str
    voldice: float
    truth_ml: float
    found_ml: float
    note: str


def training_shares(studies: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Share of each lesion class among the lesion voxels of the training studies (manifest)."""
    totals: dict[str, int] = {}
    for study in studies:
        for name, count in (study.get("lesion_voxels") or {}).items():
            totals[name] = totals.get(name, 0) + int(count)
    overall = sum(totals.values())
    return {name: (count / overall if overall else 0.0) for name, count in totals.items()}


def _note(truth_ml: float, found_ml: float, voldice: float, share: float | None) -> str:
    rare = (
        f"; only {share:.0%} of the lesion voxels the demo model trained on"
        if share is not None and share < RARE_SHARE
        else ""
    )
    if truth_ml == 0 and found_ml == 0:
        return "absent from this study and none found (VolDice of two empty masks counts as 1)"
    if truth_ml == 0:
        return f"absent from this study: all {found_ml:.1f} mL found are false positives"
    if found_ml == 0:
        return f"missed: the model found none of the {truth_ml:.1f} mL{rare}"
    if voldice < WEAK_VOLDICE:
        return f"weak: found {found_ml:.1f} of {truth_ml:.1f} mL, overlap poor{rare}"
    return ""


def class_results(
    predicted: np.ndarray,
    truth: np.ndarray,
    names: Sequence[str],
    voxel_ml: float,
    shares: Mapping[str, float] | None = None,
) -> list[ClassResult]:
    """One row per class except background (index 0), in label order."""
    if predicted.shape != truth.shape:
        raise ValueError(
            f"Argument 'predicted' has shape {predicted.shape}, 'truth' {truth.shape}: "
            "they must be the same grid."
        )
    rows = []
    for index, name in enumerate(names[1:], start=1):
        pred_mask, truth_mask = predicted == index, truth == index
        truth_ml = float(np.count_nonzero(truth_mask)) * voxel_ml
        found_ml = float(np.count_nonzero(pred_mask)) * voxel_ml
        voldice = dice(pred_mask, truth_mask)
        share = None if shares is None else shares.get(name)
        note = _note(truth_ml, found_ml, voldice, share)
        rows.append(ClassResult(name, voldice, truth_ml, found_ml, note))
    return rows


def format_table(rows: Sequence[ClassResult]) -> list[str]:
    lines = [f"{'class':<15}{'VolDice':>9}{'truth mL':>10}{'found mL':>10}  note"]
    for row in rows:
        lines.append(
            f"{row.name:<15}{row.voldice:>9.3f}{row.truth_ml:>10.1f}{row.found_ml:>10.1f}"
            f"  {row.note}".rstrip()
        )
    if any(row.note.startswith(("missed", "weak")) for row in rows):
        lines.append(
            "The demo trains for minutes on a CPU: the lung and the commoner lesions come first. A "
            "longer run (`pulmoseg train --config <recipe>`, training/configs/) or the "
            "semi-supervised recipes learn the rest (README.md, docs/results.md)."
        )
    return lines
