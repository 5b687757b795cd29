"""Inference speed: ONNX Runtime vs PyTorch eager on the same weights, same input, one process.

Also times the whole service pipeline (MONAI Deploy graph: parsing → selecting → volume →
inference → writing) on a phantom study. Prints a table; figures go to docs/benchmarks.md
with machine and date.

    python bench/inference_speed.py [--size 256] [--slices 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from service.app.study_runner import StudyRunner
from service.core.progress import ProgressStage
from training.config import config_from_dict
from training.export.onnx_export import export_onnx
from training.nn.networks import build_network
from training.phantom import generate_dataset


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pulmoseg-bench-"))
    config = config_from_dict({"model": {"input_size": [args.size, args.size]}})
    torch.manual_seed(0)
    net = build_network(config.model).eval()
    ckpt = work / "net.pt"
    torch.save(
        {"model": net.state_dict(), "config": config.to_dict(), "epoch": 0, "best_dice": {}}, ckpt
    )
    export_onnx(ckpt, work / "model.onnx")

    batch = np.random.default_rng(0).uniform(-1000, 400, (args.batch, 3, args.size, args.size))
    batch = batch.astype(np.float32)
    session = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
    n_batches = int(np.ceil(args.slices / args.batch))

    def run_torch() -> None:
        with torch.no_grad():
            for _ in range(n_batches):
                net(torch.from_numpy(batch))

    def run_ort() -> None:
        for _ in range(n_batches):
            session.run(None, {"hu": batch})

    t_torch = _time(run_torch, args.repeats)
    t_ort = _time(run_ort, args.repeats)

    manifest = generate_dataset(
        work / "data", studies=1, seed=3, size=args.size, slices=args.slices, progress=False
    )
    study = json.loads(manifest.read_text())["studies"][0]
    dicom_dir = manifest.parent / study["dicom"]
    blobs = [p.read_bytes() for p in sorted(dicom_dir.iterdir())]
    runner = StudyRunner.load(work / "model.onnx")
    timings: dict[str, float] = {}

    def run_pipeline() -> None:
        timings.update(runner.segment(blobs).stage_seconds)

    t_pipeline = _time(run_pipeline, args.repeats)

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, ort {ort.__version__}"
    )
    print(
        f"network: 2.5D BasicUNet {config.model.features}, input {args.size}x{args.size}, "
        f"{args.slices} slices in batches of {args.batch}"
    )
    print(f"{'what':<38}{'seconds':>10}{'ratio':>10}")
    print(f"{'PyTorch eager (fp32), all slices':<38}{t_torch:>10.3f}{1.0:>10.2f}")
    print(f"{'ONNX Runtime CPU, all slices':<38}{t_ort:>10.3f}{t_torch / t_ort:>10.2f}")
    print(f"{'service pipeline, whole study':<38}{t_pipeline:>10.3f}")
    for stage in (s.value for s in ProgressStage if s.value in timings):
        print(f"{'  stage ' + stage:<38}{timings.get(stage, float('nan')):>10.3f}")


if __name__ == "__main__":
    main()
