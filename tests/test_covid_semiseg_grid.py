"""Smoke version of the COVID-SemiSeg label-efficiency grid (``bench/covid_semiseg.py``,
issue 21): the CPU protocol's whole pipeline (folds, 8 vs all labels, a donor stage shared by
TCSM, pre-training in front of the better semi-supervised method, pooled out-of-fold scores,
bootstrap CIs, paired differences, the three targets, the docs section) on generated slices.

Tiny sizes (``--smoke``: 64x64, a 4..16-channel network, 1-3 steps per stage, checkpoint
scoring), so its numbers mean nothing; it proves that the grid produces the rows the issue's
check reads ("8" and "40" labeled) with finite Dice and CIs. One subprocess, under a minute
on 2 cores.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.slice_images import write_image, write_palette_mask

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "covid_semiseg.py"


def _slice(rng: np.random.Generator, size: int, lesion: int) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit "CT slice": body disc, two dark lungs, a bright lesion blob in one lung
    (``lesion``: 0 none, 1 GGO, 2 consolidation) and noise; its class-index mask."""
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    image = np.full((size, size), 10.0)
    image[(yy - c) ** 2 + (xx - c) ** 2 < (0.45 * size) ** 2] = 110.0
    for side in (-1, 1):
        lung = ((yy - c) / (0.3 * size)) ** 2 + ((xx - c - side * 0.2 * size) / (0.14 * size)) ** 2
        image[lung < 1] = 30.0
    mask = np.zeros((size, size), dtype=np.uint8)
    if lesion:
        cy = c + rng.uniform(-0.15, 0.15) * size
        cx = c + rng.choice([-1, 1]) * 0.2 * size
        r = rng.uniform(0.05, 0.1) * size
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image[blob] = 120.0 if lesion == 1 else 200.0
        mask[blob] = lesion
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255), mask


def _dataset(root: Path, labeled: int = 24, unlabeled: int = 12, size: int = 48) -> Path:
    rng = np.random.default_rng(21)
    for i in range(labeled):
        image, mask = _slice(rng, size, lesion=(1, 2, 1)[i % 3])
        write_image(root / "train" / "images" / f"{i}.jpg", image)
        write_palette_mask(root / "train" / "masks" / f"{i}.png", mask)
    for i in range(unlabeled):
        image, _ = _slice(rng, size, lesion=int(rng.integers(0, 3)))
        write_image(root / "unlabeled" / f"Data-1_synthetic_{i:03d}.jpg", image)
    return root


def _finite_ci(stats: dict) -> bool:
    values = (stats["mean"], stats["ci_low"], stats["ci_high"])
    return all(math.isfinite(v) for v in values) and values[1] <= values[0] <= values[2]


def test_cpu_grid_smoke_gives_8_and_40_label_rows_with_finite_dice_and_cis(
    tmp_path: Path,
) -> None:
    data = _dataset(tmp_path / "data")
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\n## Another section\n\nkept as it is\n")
    command = [sys.executable, str(BENCH), "--protocol", "cpu", "--smoke"]
    command += ["--data", str(data), "--out", str(tmp_path / "out"), "--docs", str(docs)]
    command += ["--methods", "supervised,tcsm", "--labels", "8", "40", "--folds", "2"]
    command += ["--pretrain-best", "8", "--workers", "1", "--bootstrap", "200"]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=REPO, check=False
    )
    assert run.returncode == 0, run.stderr[-4000:]

    results = json.loads((tmp_path / "out" / "smoke" / "results.json").read_text())
    rows = {(r["labels"], r["method"]): r for r in results["rows"]}
    # 2 methods x 2 label counts, plus the pre-trained better method (and its donor) at 8
    assert {(8, "supervised"), (8, "tcsm"), (40, "supervised"), (40, "tcsm")} <= set(rows)
    assert (8, "pre_tcsm") in rows and (8, "pre_supervised") in rows
    assert not results["failed"] and not results["skipped"]
    for key, row in rows.items():
        assert row["complete"] and row["folds"] == [0, 1], key
        assert row["n"] == 24, key  # every labeled slice scored once, out of fold
        for cls in ("infection", "ggo", "consolidation"):
            assert _finite_ci(row["scores"][f"dice:{cls}"]), (key, cls)
    paired = rows[(8, "tcsm")]["paired"]["supervised (same labels)"]
    assert paired["against"] == [8, "supervised"]
    assert _finite_ci(paired) and paired["wins"] + paired["losses"] <= 24
    assert rows[(8, "pre_tcsm")]["paired"]["without pre-training"]["against"] == [8, "tcsm"]
    assert [t["status"] in ("met", "not met") for t in results["targets"]] == [True] * 3

    # the table rows the check reads: "8" and "40" labeled (40 = all 12 of a fold)
    table = (tmp_path / "out" / "smoke" / "results.md").read_text()
    assert re.search(r"^\| 8 \| Supervised \| \d\.\d{3} \[", table, re.M), table
    assert re.search(r"^\| 40 \(all: 12\) \| Supervised \+ TCSM \| \d\.\d{3} \[", table, re.M)
    assert "best semi-supervised @8 >= supervised @40 - 0.02" in table

    text = docs.read_text()
    assert "## Another section\n\nkept as it is" in text
    assert text.count("<!-- covid-semiseg-cpu:start -->") == 1
    assert "--protocol cpu" in text and "| 40 (all: 12) | Supervised |" in text


@pytest.mark.parametrize("protocol", ["cpu", "gpu"])
def test_protocols_select_their_config_and_defaults(protocol: str) -> None:
    sys.path.insert(0, str(BENCH.parent))
    try:
        import covid_semiseg as bench
    finally:
        sys.path.remove(str(BENCH.parent))
    args = bench._parse(["--protocol", protocol])
    config = bench.load_config(args.config)
    if protocol == "cpu":
        assert (args.folds, args.pretrain_best) == (3, [8, 40])
        assert config.optim.bf16 is False and config.model.input_size == (128, 128)
        assert config.model.features == (16, 16, 32, 64, 128, 16)
        assert config.runtime.checkpoint_selection == "last_epoch"
    else:
        assert (args.folds, args.pretrain_best) == (5, [])
        assert args.config.name == "covid_semiseg_grid.yaml"
