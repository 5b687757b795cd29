"""Evaluation results: per-item scores, their mean ± sd summary, and the text table / JSON.

Kept apart from the scoring (``training.evaluation.evaluate``) so that tools which pool several
reports, such as the cross-validation benchmark, can summarise and print items without
loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METRICS: tuple[str, ...] = ("dice", "vol_dice", "cdice")

#: ``summary[metric][class]`` = {"mean", "sd" (None when n < 2), "n", "n_absent"}.
Summary = dict[str, dict[str, dict[str, float | int | None]]]


@dataclass
class ItemMetrics:
    """Scores of one study (3D) or slice (2D), keyed by class name."""

    item: str
    kind: str
    dice: dict[str, float]
    cdice: dict[str, float]
    vol_dice: dict[str, float] = field(default_factory=dict)
    reference_voxels: dict[str, int] = field(default_factory=dict)
    predicted_voxels: dict[str, int] = field(default_factory=dict)


@dataclass
class EvaluationReport:
    """Items plus ``summary[metric][class]`` = mean, sd (None when n < 2), n, n_absent."""

    model_path: str
    model_name: str
    model_version: str
    provider: str
    source: str
    kind: str
    split: str
    classes: list[str]
    items: list[ItemMetrics]
    summary: Summary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def format_table(self, *, per_item: bool = False) -> str:
        """Plain-text table: one row per class, one column per metric (mean ± sd)."""
        metrics = [m for m in METRICS if self.summary.get(m)]
        width = max(len(c) for c in [*self.classes, "class"]) + 2
        lines = [
            f"{self.model_name} {self.model_version} on {len(self.items)} {self.kind} item(s) "
            f"of {self.source} (split: {self.split}; provider: {self.provider})",
            "class".ljust(width) + "".join(m.rjust(18) for m in metrics),
        ]
        for name in self.classes:
            cells = []
            for m in metrics:
                s = self.summary[m][name]
                sd = "" if s["sd"] is None else f" ± {s['sd']:.3f}"
                cells.append(f"{s['mean']:.3f}{sd}".rjust(18))
            lines.append(name.ljust(width) + "".join(cells))
        if per_item:
            lines.append("")
            lines.append(
                "item".ljust(24)
                + "".join(f"{m}:{c}".rjust(22) for m in metrics for c in self.classes)
            )
            for it in self.items:
                values = [getattr(it, m)[c] for m in metrics for c in self.classes]
                lines.append(it.item[:23].ljust(24) + "".join(f"{v:.3f}".rjust(22) for v in values))
        return "\n".join(lines)


def summarise_items(items: Sequence[ItemMetrics], classes: Sequence[str]) -> Summary:
    """Mean ± sd per metric and class over items (used for folds pooled across reports too)."""
    summary: Summary = {}
    for metric in METRICS:
        per_class = {}
        for name in classes:
            values = [getattr(it, metric)[name] for it in items if name in getattr(it, metric)]
            if not values:
                continue
            arr = np.asarray(values, dtype=np.float64)
            per_class[name] = {
                "mean": float(arr.mean()),
                "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
                "n": int(arr.size),
                # Items without this class in the reference score Dice 1.0 if none predicted.
                "n_absent": sum(1 for it in items if it.reference_voxels.get(name) == 0),
            }
        if per_class:
            summary[metric] = per_class
    return summary
