"""Per-study time of two served models on one real study, side by side in one process.

Both models go through the service's own study pipeline (``service.app.study_runner``: DICOM
parsing, volume, inference, post-processing, SEG) on the same study with the same thread count;
after one warm-up study each, the repeats alternate between the models (A B A B …) so that load
from anything else on the machine falls on both alike. Prints the median seconds per study,
the stage medians, and the ratio new / reference (≤ 1 = no slower).

    python bench/real_ct_model_speed.py --reference runs/model_1.1.0.onnx \
        --model models/pulmoseg-real-ct.onnx [--study ../shared/data/covid-ct-md/studies/P002]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from service.app.study_runner import StudyRunner

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = REPO.parent / "shared" / "data" / "covid-ct-md" / "studies" / "P002"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="e.g. the 1.1.0 model")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "pulmoseg-real-ct.onnx")
    parser.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not args.study.is_dir():
        print(f"No study folder '{args.study}'.", file=sys.stderr)
        return 2
    runners = {
        "reference": StudyRunner.load(args.reference, intra_op_threads=args.threads),
        "model": StudyRunner.load(args.model, intra_op_threads=args.threads),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in runners}
    with tempfile.TemporaryDirectory(prefix="pulmoseg-speed-") as tmp:
        for name, runner in runners.items():  # warm-up, not counted
            runner.segment_directory(args.study, Path(tmp) / f"warm-{name}")
        for k in range(args.repeats):
            for name, runner in runners.items():
                result = runner.segment_directory(args.study, Path(tmp) / f"{name}-{k}")
                seconds[name].append(result.seconds)
                for stage, value in result.stage_seconds.items():
                    stages[name].setdefault(str(stage), []).append(value)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        f"{args.study.name}, {args.threads} threads, {args.repeats} warm repeats each, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    print("| model | file | median s/study | stages (median s) |")
    print("|---|---|---|---|")
    for name, path in (("reference", args.reference), ("model", args.model)):
        parts = ", ".join(f"{s} {statistics.median(v):.2f}" for s, v in stages[name].items())
        print(f"| {name} | {path.name} | {median[name]:.2f} | {parts} |")
    print(f"ratio model / reference: {median['model'] / median['reference']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
