"""LABELMAP vs BINARY DICOM-SEG: file size and write time on real CT studies.

For each study folder, the shipped real-CT model segments the series once; then the same labels
are written as every SEG variant through ``service.dicom.seg_writer`` (build + serialise, the
service's "writing" stage), ``--repeats`` times, alternating variants so that load from anything
else on the machine falls on all alike. Prints a Markdown table (median write time) and JSON.

    .venv/bin/python bench/labelmap_size.py [--studies DIR...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from service.dicom.seg_writer import build_segmentation, segmentation_to_bytes
from service.dicom.study_input import StudySource, choose_ct_series, load_study
from service.dicom.volume import series_to_volume
from service.predictor.onnx_backend import load_onnx_predictor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDIES = sorted((REPO.parent / "shared" / "data" / "covid-ct-md" / "studies").glob("*"))
DEFAULT_MODEL = REPO / "models" / "pulmoseg-real-ct.onnx"
#: (name, segmentation type, transfer syntax; None = the writer's default for the type)
VARIANTS = (
    ("BINARY (default, uncompressed)", "BINARY", None),
    ("LABELMAP uncompressed (before)", "LABELMAP", ExplicitVRLittleEndian),
    ("LABELMAP RLE Lossless (now the default)", "LABELMAP", None),
    ("LABELMAP JPEG-LS lossless", "LABELMAP", JPEGLSLossless),
)


def write_seconds(volume, labels, manifest, kind: str, syntax: str | None) -> tuple[float, int]:
    start = time.perf_counter()
    seg = build_segmentation(
        volume,
        labels,
        manifest,
        software_version="bench",
        segmentation_type=kind,
        transfer_syntax_uid=syntax,
    )
    data = segmentation_to_bytes(seg)
    return time.perf_counter() - start, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", type=Path, default=DEFAULT_STUDIES)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    predictor = load_onnx_predictor(args.model, cpu_only=True)
    manifest = predictor.manifest
    results = []
    for study in args.studies:
        series = choose_ct_series(load_study(StudySource.from_folder(study)).datasets).datasets
        volume = series_to_volume(series)
        labels = predictor.predict_labels(volume.hu)
        present = np.bincount(labels.ravel(), minlength=len(manifest.classes)).tolist()
        times: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        sizes: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, kind, syntax in VARIANTS:
                seconds, size = write_seconds(volume, labels, manifest, kind, syntax)
                times[name].append(seconds)
                sizes[name] = size
        row = {
            "study": study.name,
            "shape": list(volume.hu.shape),
            "voxels_per_class": present,
            "variants": {
                name: {"bytes": sizes[name], "seconds": statistics.median(times[name])}
                for name, _, _ in VARIANTS
            },
        }
        results.append(row)
        print(f"[{study.name}] {row['shape']} done", flush=True)

    binary = VARIANTS[0][0]
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d}, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"median of {args.repeats}\n"
    )
    print("| study (z×y×x) | variant | size | ÷ BINARY | write (build + serialise) |")
    print("|---|---|---|---|---|")
    for row in results:
        base = row["variants"][binary]["bytes"]
        shape = "×".join(map(str, row["shape"]))
        for name, v in row["variants"].items():
            print(
                f"| {row['study']} ({shape}) | {name} | {v['bytes'] / 1e6:.2f} MB | "
                f"{v['bytes'] / base:.2f} | {v['seconds']:.2f} s |"
            )
    print("\n" + json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
