"""Smoke test of ``bench/vs_stock.py``: both pipelines run on a tiny study and agree.

Three fresh processes (stock imports torch and MONAI core) take 40-90 s on a 2-core machine;
the suite runs it so that the benchmark behind docs/benchmarks.md cannot rot unnoticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_vs_stock_prints_a_table_and_the_pipelines_agree(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    command = [sys.executable, str(REPO / "bench" / "vs_stock.py"), "--size", "64"]
    command += ["--sizes", "8", "--runs", "1", "--checkpoint", str(trained_checkpoint)]
    command += ["--out", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {
        m.group(1): m.group(0) for m in re.finditer(r"^\| 64×64×8 \| (\S+) \|.*$", run.stdout, re.M)
    }
    assert set(rows) == {"pulmoseg", "stock"}, run.stdout
    same = re.search(r"\| ([\d.]+) % \|", rows["pulmoseg"])
    assert same is not None and float(same.group(1)) >= 99.9, rows["pulmoseg"]
    assert "MiB" in rows["stock"] and "inference" in rows["stock"]
