"""One real CT study through the service's stages, before and after the 2026-12 speed work.

Runs, in one process and on the same study, the pipeline stages as the service ran them before
(dense-matrix resizes, K probability maps resized to 512², the lung field found again for the
consistency check, serial decoding: reimplemented here, faithfully) and as it runs them now
(two-tap resize, labels from the argmax at the network's size, one lung field per study,
decoding in parallel where the CPUs allow), alternating BEFORE / AFTER so that load from
anything else on the machine falls on both alike. Prints the stage table (medians of the warm
repeats, and the first study of each), the label identity of the served labels (after the
lung-field confinement) and of the consistency VolDice, and the end-to-end time of the real
study graph (``StudyRunner``), which adds parsing and the applicability check.

``--first-vs-warm`` adds the first-study gap: fresh processes segment a ``--stack-slices``
study (the study's slices repeated at new positions) three times after the server's warm-up
(``service.app.warm_up``), with and without the fix described in docs/benchmarks.md.

    .venv/bin/python bench/real_study_speed.py [--study DIR] [--repeats 3] [--threads 2] \
        [--first-vs-warm] [--stack-slices 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service import __version__
from service.core.lung_field import (
    LUNG_FIELD_CLASSES,
    LungFieldConfinement,
    lung_field_confinement,
    manifest_confinement,
)
from service.core.manifest import ModelManifest
from service.core.preprocessing import interpolation_matrix, slice_context_stack
from service.dicom.seg_writer import write_study_seg
from service.dicom.study_input import StudySource, choose_ct_series, load_study
from service.dicom.volume import CTVolume, release_encoded_pixels, series_to_volume
from service.predictor import Predictor
from service.predictor.predictor import argmax_classes, softmax
from service.quality.consistency import consistency_voldice
from service.quality.transforms import ConsistencyTransform

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = REPO.parent / "shared" / "data" / "covid-ct-md" / "studies" / "P002"
DEFAULT_MODEL = REPO / "models" / "pulmoseg-real-ct.onnx"
STAGES = (
    "parse",
    "decode",
    "preprocess",
    "network",
    "postprocess",
    "lung field",
    "consistency",
    "SEG write",
)


# --- BEFORE: the code paths as they were (commit d383ee6), reimplemented here ---------------


def old_resize_planes(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The dense-matrix bilinear resize (``rows @ x @ cols.T``) that the service used."""
    height, width = (int(s) for s in size)
    data = np.asarray(array, dtype=np.float32)
    if data.shape[-2:] == (height, width):
        return data
    rows = interpolation_matrix(data.shape[-2], height)
    cols = interpolation_matrix(data.shape[-1], width)
    resized: np.ndarray = np.matmul(np.matmul(rows, data), cols.T).astype(np.float32, copy=False)
    return resized


def old_predict_labels(
    predictor: Predictor, volume: np.ndarray, timings: dict[str, float]
) -> np.ndarray:
    """Stack, dense resize, network, softmax, K maps resized to the slice size, argmax."""
    depth, height, width = volume.shape
    labels = np.empty((depth, height, width), dtype=np.uint8)
    data = volume.astype(np.float32, copy=False)
    geometry = predictor.geometry
    for start in range(0, depth, predictor.batch_size):
        z = np.arange(start, min(start + predictor.batch_size, depth))
        t0 = time.perf_counter()
        batch = old_resize_planes(
            slice_context_stack(data, geometry.slice_context, z), geometry.input_size
        )
        batch = np.ascontiguousarray(batch)
        t1 = time.perf_counter()
        output = predictor.backend.run(batch)
        t2 = time.perf_counter()
        probs = old_resize_planes(softmax(output), (height, width))
        argmax_classes(probs, out=labels[z[0] : z[-1] + 1])
        t3 = time.perf_counter()
        _add(timings, "preprocess", t1 - t0)
        _add(timings, "network", t2 - t1)
        _add(timings, "postprocess", t3 - t2)
    return labels


def old_confine(labels: np.ndarray, field: LungFieldConfinement) -> np.ndarray:
    """The old application of the field: full-size mask and ``np.isin`` over the volume."""
    stride = field.stride
    full = np.repeat(np.repeat(field.allowed, stride, axis=1), stride, axis=2)
    full = full[:, : labels.shape[1], : labels.shape[2]]
    out = labels.copy()
    out[~full & np.isin(labels, list(field.confined_classes))] = 0
    return out


def old_confine_as_manifest_says(
    labels: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], manifest: Any
) -> np.ndarray:
    """The lung field found on ``hu`` (every call), applied the old way."""
    confined = [c.index for c in manifest.classes if c.name in LUNG_FIELD_CLASSES]
    field = lung_field_confinement(hu, spacing, manifest.lung_field_margin_mm, confined)
    return old_confine(labels, field)


# --- the stages ------------------------------------------------------------------------------


def _add(timings: dict[str, float], stage: str, seconds: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + seconds


def _timed(timings: dict[str, float], stage: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    _add(timings, stage, time.perf_counter() - started)
    return result


def run_study(
    study: Path,
    predictor: Predictor,
    manifest: ModelManifest,
    *,
    after: bool,
    transform: ConsistencyTransform,
    decode_workers: int | None,
) -> tuple[dict[str, float], np.ndarray, dict[str, float], bytes]:
    """Stage seconds, served labels, consistency VolDice and the SEG of one study."""
    timings: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()

    def parse() -> list[Any]:
        return choose_ct_series(load_study(StudySource.from_folder(study)).datasets).datasets

    series = _timed(timings, "parse", parse)

    def decode() -> CTVolume:
        volume = series_to_volume(series, decode_workers=decode_workers if after else 0)
        release_encoded_pixels(volume)
        return volume

    volume: CTVolume = _timed(timings, "decode", decode)
    hu, spacing = volume.hu, volume.spacing_zyx
    classes = {c.index: c.name for c in manifest.foreground_classes}
    if after:
        raw = predictor.predict_labels(hu, timings=timings)
        field = _timed(timings, "lung field", lambda: manifest_confinement(hu, spacing, manifest))
        labels = _timed(timings, "lung field", lambda: field.confine(raw))
        scores = _timed(
            timings,
            "consistency",
            lambda: consistency_voldice(
                predictor.predict_labels, hu, labels, classes, transform, confine=field.confine
            ),
        )
    else:
        raw = old_predict_labels(predictor, hu, timings)
        labels = _timed(
            timings,
            "lung field",
            lambda: old_confine_as_manifest_says(raw, hu, spacing, manifest),
        )

        def old_predict(transformed: np.ndarray) -> np.ndarray:
            return old_confine_as_manifest_says(
                old_predict_labels(predictor, transformed, {}), transformed, spacing, manifest
            )

        scores = _timed(
            timings,
            "consistency",
            lambda: consistency_voldice(old_predict, hu, labels, classes, transform),
        )
    seg = _timed(
        timings,
        "SEG write",
        lambda: write_study_seg(volume, labels, manifest, software_version=__version__),
    )
    timings["total"] = time.perf_counter() - started
    timings["CPU s (this process)"] = time.process_time() - cpu_started
    return timings, labels, scores, seg


def _seg_pixels(seg: bytes) -> np.ndarray:
    import io

    import pydicom

    return np.asarray(pydicom.dcmread(io.BytesIO(seg)).pixel_array)


def _table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    lines = ["| stage | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for stage in (*STAGES, "total", "CPU s (this process)"):
        cells = []
        for column in columns:
            value = rows[column].get(stage)
            cells.append("—" if value is None else f"{value:.2f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(args: argparse.Namespace) -> None:
    from service.predictor.onnx_backend import load_onnx_predictor

    predictor = load_onnx_predictor(args.model, cpu_only=True, intra_op_threads=args.threads)
    assert predictor.manifest is not None
    manifest = predictor.manifest
    transform = ConsistencyTransform.parse(args.transform)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    results: dict[str, tuple[np.ndarray, dict[str, float], bytes]] = {}
    for repeat in range(args.repeats + 1):  # the first round is the process's first study
        for name in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
            timings, labels, scores, seg = run_study(
                args.study,
                predictor,
                manifest,
                after=name == "after",
                transform=transform,
                decode_workers=args.decode_workers,
            )
            runs[name].append(timings)
            results[name] = (labels, scores, seg)
            print(f"  {name} #{repeat}: {timings['total']:.2f} s", flush=True)

    def median(name: str) -> dict[str, float]:
        warm = runs[name][1:] or runs[name]
        return {k: statistics.median(t.get(k, 0.0) for t in warm) for k in warm[0]}

    table = {
        "before, first": runs["before"][0],
        "after, first": runs["after"][0],
        "before, warm": median("before"),
        "after, warm": median("after"),
    }
    table["after / before (warm)"] = {
        k: table["after, warm"][k] / v for k, v in table["before, warm"].items() if v > 0
    }
    print()
    print(_table(table, list(table)))
    served = [s for s in STAGES if s != "consistency"]
    for name in ("before", "after"):
        warm = table[f"{name}, warm"]
        print(f"{name}, warm, without the consistency stage: {sum(warm[s] for s in served):.2f} s")
    before_labels, before_scores, before_seg = results["before"]
    after_labels, after_scores, after_seg = results["after"]
    same = float(np.mean(before_labels == after_labels))
    seg_same = float(np.mean(_seg_pixels(before_seg) == _seg_pixels(after_seg)))
    print(
        f"\nserved labels identical: {100 * same:.4f} % "
        f"({int(np.sum(before_labels != after_labels))} of {before_labels.size} voxels differ); "
        f"SEG frames identical: {100 * seg_same:.4f} %"
    )
    print(f"consistency VolDice ({transform.value}) before: {_fmt(before_scores)}")
    print(f"consistency VolDice ({transform.value}) after:  {_fmt(after_scores)}")
    nearest = _nearest_agreement(args, predictor, results["after"][0])
    print(
        f"argmax at the network's size + nearest upsampling (not served): "
        f"{100 * nearest:.3f} % of served labels agree"
    )
    graph_warm(args)


def _nearest_agreement(args: argparse.Namespace, predictor: Predictor, served: np.ndarray) -> float:
    from service.predictor.predictor import LabelResampling

    series = choose_ct_series(load_study(StudySource.from_folder(args.study)).datasets).datasets
    volume = series_to_volume(series)
    nearest = Predictor(
        predictor.backend,
        predictor.geometry,
        manifest=predictor.manifest,
        label_resampling=LabelResampling.NEAREST,
    )
    field = manifest_confinement(volume.hu, volume.spacing_zyx, predictor.manifest)
    labels = nearest.predict_labels(volume.hu)
    if field is not None:
        labels = field.confine(labels)
    return float(np.mean(labels == served))


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items())


def graph_warm(args: argparse.Namespace) -> None:
    """End to end through the service's study graph (parse → … → SEG), warm."""
    from service.app.study_runner import StudyRunner
    from service.quality.assessment import QualityConfig

    for fraction in (0.0, 1.0):
        runner = StudyRunner.load(
            args.model,
            intra_op_threads=args.threads,
            quality=QualityConfig(consistency_fraction=fraction),
        )
        seconds = []
        with tempfile.TemporaryDirectory(prefix="pulmoseg-real-speed-") as tmp:
            for k in range(args.repeats + 1):
                result = runner.segment_directory(args.study, Path(tmp) / str(k))
                seconds.append(result.seconds)
        what = "with" if fraction else "without"
        print(
            f"study graph (StudyRunner), {what} the consistency check: first {seconds[0]:.2f} s,"
            f" warm median {statistics.median(seconds[1:]):.2f} s"
        )


# --- the first study of a process ------------------------------------------------------------


def stack_study(source: Path, target: Path, slices: int) -> Path:
    """``slices`` slices: the source's repeated at new positions, with new UIDs."""
    import pydicom
    from pydicom.uid import generate_uid

    files = sorted(p for p in source.iterdir() if p.is_file())
    datasets = [pydicom.dcmread(p) for p in files]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    gap = float(datasets[1].ImagePositionPatient[2]) - float(datasets[0].ImagePositionPatient[2])
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    x, y, z0 = (float(v) for v in datasets[0].ImagePositionPatient)
    target.mkdir(parents=True, exist_ok=True)
    for k in range(slices):
        ds = datasets[k % len(datasets)]
        ds.ImagePositionPatient = [x, y, z0 + k * gap]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.save_as(target / f"IM{k:04d}.dcm", enforce_file_format=True)
    return target


def _usage() -> tuple[float, int]:
    """CPU seconds of this process (all threads) and its minor page faults so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


def first_study_child(args: argparse.Namespace) -> None:
    """In a fresh process: load, warm up as the server does, then three studies."""
    import service.app.study_runner as study_runner
    from service.app.warm_up import warm_up
    from service.predictor.onnx_backend import load_onnx_predictor

    malloc = os.environ.get("PULMOSEG_BENCH_MALLOC", "")
    if malloc == "glibc-default":  # diagnostic: glibc's own (rising) mmap threshold
        study_runner.keep_large_buffers_mmapped = lambda: False  # type: ignore[assignment]
    elif malloc.isdigit():  # diagnostic: the threshold fixed at this many bytes
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, int(malloc))  # M_MMAP_THRESHOLD
        study_runner.keep_large_buffers_mmapped = lambda: True  # type: ignore[assignment]
    arena = {"off": False, "auto": None}[os.environ.get("PULMOSEG_BENCH_ARENA", "auto")]
    runner = study_runner.StudyRunner(
        load_onnx_predictor(args.model, intra_op_threads=args.threads, cpu_mem_arena=arena)
    )
    if args.old:  # the inference step as it was: dense resizes, K maps at the slice size
        import service.predictor.predictor as predictor_module
        from service.predictor.predictor import LabelResampling

        predictor_module.resize_planes = old_resize_planes  # type: ignore[assignment]
        runner.predictor.label_resampling = LabelResampling.PROBABILITIES
    warm_up(runner)
    out = []
    with tempfile.TemporaryDirectory(prefix="pulmoseg-first-") as tmp:
        for k in range(3):
            cpu, faults = _usage()
            result = runner.segment_directory(args.study, Path(tmp) / str(k))
            cpu_after, faults_after = _usage()
            out.append(
                {
                    "seconds": result.seconds,
                    "cpu": cpu_after - cpu,
                    "faults": faults_after - faults,
                    "stages": result.stage_seconds,
                }
            )
    print(json.dumps(out))


def first_vs_warm(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pulmoseg-stack-") as tmp:
        study = stack_study(args.study, Path(tmp) / "study", args.stack_slices)
        for label, env in (
            ("now (ORT arena on, one full batch at load)", {}),
            ("before (ORT arena off)", {"PULMOSEG_BENCH_ARENA": "off"}),
        ):
            wall, cpu = [], []
            for _ in range(args.processes):
                command = [sys.executable, __file__, "--child", "--study", str(study)]
                command += ["--model", str(args.model), "--threads", str(args.threads)]
                done = subprocess.run(
                    command, capture_output=True, text=True, check=True, env={**os.environ, **env}
                )
                studies = json.loads(done.stdout.strip().splitlines()[-1])
                wall.append(
                    studies[0]["seconds"] / statistics.median(s["seconds"] for s in studies[1:])
                )
                cpu.append(studies[0]["cpu"] / statistics.median(s["cpu"] for s in studies[1:]))
                walls = ", ".join(f"{s['seconds']:.2f}" for s in studies)
                cpus = ", ".join(f"{s['cpu']:.2f}" for s in studies)
                faults = ", ".join(str(s["faults"] // 1000) for s in studies)
                print(
                    f"  {label}: wall s {walls}; CPU s {cpus}; minor page faults (k) {faults}",
                    flush=True,
                )
            print(
                f"{args.stack_slices}-slice study, {label}: first / warm = wall "
                f"{', '.join(f'{r:.2f}' for r in wall)}; CPU {', '.join(f'{r:.2f}' for r in cpu)}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--transform", default="rot90", help="consistency transform")
    parser.add_argument("--decode-workers", type=int, default=None, help="None: automatic")
    parser.add_argument("--first-vs-warm", action="store_true")
    parser.add_argument("--only-first-vs-warm", action="store_true")
    parser.add_argument("--stack-slices", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2, help="fresh processes per variant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--old", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.study.is_dir():
        print(f"No study folder '{args.study}'.", file=sys.stderr)
        return 2
    if args.child:
        first_study_child(args)
        return 0
    load = os.getloadavg()
    print(
        f"{args.study.name}, {args.threads} threads, {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} CPUs, load average {load[0]:.1f} at the start"
    )
    if not args.only_first_vs_warm:
        compare(args)
    if args.first_vs_warm or args.only_first_vs_warm:
        first_vs_warm(args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
