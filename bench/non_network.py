"""Everything but the network: the service graph's own cost on a large study.

Runs the real ``StudyRunner`` graph (parse → select → volume → predictor → SEG) with a stand-in
backend that costs next to nothing (labels by HU thresholds, as logits), so what remains is
parsing, volume building, the predictor's stacking/resizing/argmax, SEG writing and the graph.
``--net-size`` below the study's size makes the predictor resample (down and back up).

    python bench/non_network.py [--slices 300] [--size 512] [--net-size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from service.app.study_runner import StudyRunner
from service.core.classes import classes_for
from service.core.manifest import ModelManifest
from service.predictor import InferenceBackend, InputGeometry, Predictor
from training.phantom import generate_dataset


class ThresholdBackend(InferenceBackend):
    """Logits from HU thresholds on the centre slice: air, lung, GGO, consolidation."""

    provider = "threshold"

    def __init__(self) -> None:
        self.seconds = 0.0

    def run(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        centre = batch[:, batch.shape[1] // 2]
        labels = np.digitize(centre, [-900.0, -500.0, -100.0]).astype(np.int64)
        logits = np.zeros((batch.shape[0], 4, *centre.shape[1:]), dtype=np.float32)
        np.put_along_axis(logits, labels[:, None], 1.0, axis=1)
        self.seconds += time.perf_counter() - started
        return logits


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="in-plane size of the study")
    parser.add_argument("--net-size", type=int, default=None, help="network input size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pulmoseg-non-network-"))
    print(f"writing a {args.size}x{args.size}x{args.slices} phantom study …", flush=True)
    manifest_path = generate_dataset(
        work, studies=1, seed=5, size=args.size, slices=args.slices, progress=False
    )
    study = manifest_path.parent / "phantom_0000" / "dicom"
    net = args.net_size or args.size
    manifest = ModelManifest(
        name="threshold",
        version="0",
        classes=classes_for(("background", "lung", "ggo", "consolidation")),
        slice_context=3,
        hu_window=(-1100.0, 300.0),
        input_size=(net, net),
    )
    backend = ThresholdBackend()
    runner = StudyRunner(
        Predictor(backend, InputGeometry.from_manifest(manifest), manifest=manifest)
    )
    totals, stages, network = [], [], []
    for _ in range(args.repeats + 1):  # the first run warms the caches
        backend.seconds = 0.0
        result = runner.segment_directory(study)
        totals.append(result.seconds - backend.seconds)
        stages.append(result.stage_seconds)
        network.append(backend.seconds)
    totals, stages, network = totals[1:], stages[1:], network[1:]
    print(
        f"\n{args.size}×{args.size}×{args.slices} study, network input {net}×{net}; "
        f"median of {args.repeats} warm runs (stand-in network excluded)"
    )
    print("| part | seconds |\n|---|---|")
    for name in stages[0]:
        seconds = statistics.median(s[name] for s in stages)
        if name == "inference":
            name, seconds = "inference minus network", seconds - statistics.median(network)
        print(f"| {name} | {seconds:.3f} |")
    print(f"| **everything but the network** | **{statistics.median(totals):.3f}** |")
    print(f"\npeak RSS {_peak_mib():.0f} MiB (this process, threshold backend)")


if __name__ == "__main__":
    main()
