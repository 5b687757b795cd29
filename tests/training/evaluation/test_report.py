"""Tests for training.evaluation.report: summaries (mean ± sd, absences), table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.evaluation.report import EvaluationReport, ItemMetrics, summarise_items

CLASSES = ["ggo", "infection"]


def _items() -> list[ItemMetrics]:
    return [
        ItemMetrics(
            "case_1",
            "2d",
            dice={"ggo": 0.5, "infection": 0.8},
            cdice={"ggo": 0.4, "infection": 0.7},
            reference_voxels={"ggo": 10, "infection": 12},
        ),
        ItemMetrics(
            "case_2",
            "2d",
            dice={"ggo": 1.0, "infection": 0.6},
            cdice={"ggo": 0.0, "infection": 0.5},
            reference_voxels={"ggo": 0, "infection": 5},
        ),
    ]


def _report(items: list[ItemMetrics]) -> EvaluationReport:
    return EvaluationReport(
        model_path="m.onnx",
        model_name="demo",
        model_version="1.2.0",
        provider="CPUExecutionProvider",
        source="slices/images",
        kind="2d",
        split="val",
        classes=CLASSES,
        items=items,
        summary=summarise_items(items, CLASSES),
    )


def test_summary_has_mean_sample_sd_count_and_absences() -> None:
    summary = summarise_items(_items(), CLASSES)
    assert set(summary) == {"dice", "cdice"}  # no item has vol_dice: the metric is left out
    ggo = summary["dice"]["ggo"]
    assert ggo["mean"] == pytest.approx(0.75)
    assert ggo["sd"] == pytest.approx(0.3535534)  # sample sd of (0.5, 1.0)
    assert (ggo["n"], ggo["n_absent"]) == (2, 1)  # case_2 has no GGO in its reference
    assert summary["cdice"]["infection"]["mean"] == pytest.approx(0.6)
    single = summarise_items(_items()[:1], CLASSES)
    assert single["dice"]["ggo"]["sd"] is None  # one item: no spread


def test_table_rows_and_per_item_columns() -> None:
    lines = _report(_items()).format_table(per_item=True).splitlines()
    assert lines[0] == (
        "demo 1.2.0 on 2 2d item(s) of slices/images (split: val; provider: CPUExecutionProvider)"
    )
    assert lines[1].split() == ["class", "dice", "cdice"]
    assert lines[2].split() == ["ggo", "0.750", "±", "0.354", "0.200", "±", "0.283"]
    assert lines[3].split() == ["infection", "0.700", "±", "0.141", "0.600", "±", "0.141"]
    assert lines[4] == ""
    assert lines[5].split() == [
        "item",
        "dice:ggo",
        "dice:infection",
        "cdice:ggo",
        "cdice:infection",
    ]
    assert lines[6].split() == ["case_1", "0.500", "0.800", "0.400", "0.700"]
    assert len(lines) == 8
    one = _report(_items()[:1]).format_table().splitlines()
    assert one[2].split() == ["ggo", "0.500", "0.400"]  # no "± sd" for a single item


def test_json_round_trip_creates_the_folder(tmp_path: Path) -> None:
    report = _report(_items())
    path = report.write_json(tmp_path / "a" / "b" / "metrics.json")
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["items"][1]["item"] == "case_2" and data["summary"]["dice"]["ggo"]["n_absent"] == 1
