"""pulmoseg against the stock MONAI Deploy pipeline: same weights, same input size, side by side.

Stock: ``DICOMDataLoaderOperator`` (``CountCondition(1)``) → ``DICOMSeriesSelectorOperator`` →
``DICOMSeriesToVolumeOperator`` → ``MonaiSegInferenceOperator`` (TorchScript of the same
network, the SDK's example pattern: transforms and the operator built in ``compute``) →
``DICOMSegmentationWriterOperator``. pulmoseg: ``StudyRunner`` (the ``LungSegmentationApp``
graph the gRPC server runs) on the exported ONNX model, optionally its int8 variant too.

Every run is a fresh process (``--child``) that segments the study twice (the first study in a
process, model load included, then a warm one); pipelines alternate, ``--runs`` times per size.
Peak memory is the child's own ``VmHWM`` (``wait4``'s ``ru_maxrss`` is no use here: Linux
carries the parent's high-water mark across fork and exec). pulmoseg's children run with the
serve install's imports (no torch or MONAI core, as in the image). Masks are
compared voxel by voxel after reading both SEGs back. Prints a markdown table.

    python bench/vs_stock.py [--sizes 64 256] [--runs 3] [--out DIR] [--quantize]
        [--checkpoint CKPT] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.import_blocking import SERVE_ONLY_BLOCKED, blocking_prelude  # noqa: E402

#: In-plane size of the studies and of the network input (no resampling in either pipeline).
SIZE = 512
PIPELINES = ("pulmoseg", "stock")
INT8 = "pulmoseg-int8"
#: Slices per TorchScript call in the stock pipeline (pulmoseg bounds its own batch).
STOCK_BATCH = 4


# ---------------------------------------------------------------- the child processes


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_pulmoseg(model: Path, study: Path, out: Path, threads: int) -> list[dict[str, Any]]:
    from service.app.study_runner import StudyRunner

    started = time.perf_counter()
    runner = StudyRunner.load(model, intra_op_threads=threads)
    load = time.perf_counter() - started
    studies = []
    for k in range(2):
        result = runner.segment_directory(study, out / f"study{k}")
        studies.append(
            {
                "seconds": result.seconds + (load if k == 0 else 0.0),
                "stages": {"model load": load if k == 0 else 0.0, **result.stage_seconds},
                "seg": str(out / f"study{k}" / "seg.dcm"),
                "peak_rss_mib": _peak_rss_mib(),
            }
        )
        del result  # as the stock loop keeps nothing of a finished study
    return studies


def _child_stock(model: Path, study: Path, out: Path, threads: int) -> list[dict[str, Any]]:
    import torch
    from stock_pipeline import StockSegApp

    torch.set_num_threads(threads)
    manifest = json.loads((model.parent / "manifest.json").read_text())
    studies = []
    for k in range(2):
        stages: dict[str, float] = {}
        folder = out / f"study{k}"
        started = time.perf_counter()
        StockSegApp(study, folder, model, manifest, stages).run()
        seconds = time.perf_counter() - started
        (seg,) = folder.glob("*.dcm")
        studies.append(
            {"seconds": seconds, "stages": stages, "seg": str(seg), "peak_rss_mib": _peak_rss_mib()}
        )
    return studies


def child_main(args: argparse.Namespace) -> None:
    run = _child_stock if args.child == "stock" else _child_pulmoseg
    studies = run(args.model, args.study, args.result.parent, args.threads)
    args.result.write_text(json.dumps(studies))


# ---------------------------------------------------------------- preparation


def prepare_models(
    work: Path, checkpoint: Path | None, quantize: bool, size: int = SIZE
) -> dict[str, Path]:
    """ONNX (pulmoseg) and TorchScript (stock) of one checkpoint, plus int8 if asked."""
    import torch
    from stock_pipeline import export_torchscript

    from training.config import config_from_dict
    from training.export.onnx_export import export_onnx, load_checkpoint
    from training.nn.networks import build_network

    models = {"pulmoseg": work / "model.onnx", "stock": work / "stock" / "model.ts"}
    if quantize:
        models[INT8] = work / "model.int8.onnx"
    if all(path.is_file() for path in models.values()):  # a reused --out folder
        return models
    if checkpoint is None:  # speed does not depend on the weights
        config = config_from_dict({"model": {"input_size": [size, size]}})
        torch.manual_seed(0)
        net = build_network(config.model).eval()
        checkpoint = work / "net.pt"
        state = {"model": net.state_dict(), "config": config.to_dict(), "epoch": 0}
        torch.save({**state, "best_dice": {}}, checkpoint)
    _, config, _ = load_checkpoint(checkpoint)
    if tuple(config.model.input_size) != (size, size):
        raise ValueError(
            f"Checkpoint '{checkpoint}' has input size {config.model.input_size}; the comparison "
            f"runs both pipelines at {size}x{size} without resampling (see --size)."
        )
    print(f"exporting {checkpoint} to ONNX and TorchScript …", flush=True)
    result = export_onnx(checkpoint, models["pulmoseg"])
    export_torchscript(checkpoint, models["stock"], batch_size=STOCK_BATCH)
    (models["stock"].parent / "manifest.json").write_text(result.manifest.to_json())
    if quantize:
        from training.export.quantize import quantize_onnx

        calibration = phantom_study(work / "calibration", 24, size, seed=99)[1]
        quantize_onnx(models["pulmoseg"], models[INT8], [calibration])
    return models


def phantom_study(root: Path, slices: int, size: int, seed: int = 3) -> tuple[Path, np.ndarray]:
    """A phantom CT study (DICOM folder) and its HU volume, generated once per folder."""
    from training.data.volumes import load_study, read_dataset_manifest
    from training.phantom import generate_dataset

    if not (root / "manifest.json").is_file():
        print(f"writing a {size}x{size}x{slices} phantom study …", flush=True)
        generate_dataset(root, studies=1, seed=seed, size=size, slices=slices, progress=False)
    (record,) = read_dataset_manifest(root)
    assert record.dicom_dir is not None
    return record.dicom_dir, load_study(record).hu


# ---------------------------------------------------------------- measuring


def run_child(pipeline: str, model: Path, study: Path, out: Path, threads: int) -> dict[str, Any]:
    """One fresh process; its studies plus its peak RSS (VmHWM)."""
    shutil.rmtree(out, ignore_errors=True)  # a reused --out folder: no stale SEG to pick up
    out.mkdir(parents=True, exist_ok=True)
    result = out / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HOLOSCAN_LOG_LEVEL": "ERROR"}
    child = "stock" if pipeline == "stock" else "pulmoseg"
    argv = [str(Path(__file__).resolve()), "--child", child, "--model", str(model)]
    argv += ["--study", str(study), "--result", str(result), "--threads", str(threads)]
    if child == "stock":
        command = [sys.executable, *argv]
    else:  # as the serve install runs it: torch, training code and MONAI core absent
        script = blocking_prelude(SERVE_ONLY_BLOCKED, "serve install") + (
            f"sys.argv = {argv!r}\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
        )
        command = [sys.executable, "-c", script]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(
            f"The {pipeline} run failed (exit {proc.returncode}):\n{stderr.decode()[-3000:]}"
        )
    studies = json.loads(result.read_text())
    return {
        "studies": studies,
        "process_seconds": time.perf_counter() - started,
        "peak_rss_mib": max(study["peak_rss_mib"] for study in studies),
    }


def agreement(seg_a: str, seg_b: str, uids: list[str]) -> float:
    """Fraction of voxels with the same label in two SEGs of the same series."""
    from service.dicom.seg_reader import read_seg_labels

    a, b = read_seg_labels(seg_a, uids), read_seg_labels(seg_b, uids)
    return float(np.mean(a == b))


def source_uids(study: Path) -> list[str]:
    from service.dicom.study_input import load_instances_from_dir, select_ct_series
    from service.dicom.volume import series_to_volume

    volume = series_to_volume(select_ct_series(load_instances_from_dir(study)))
    return [str(ds.SOPInstanceUID) for ds in volume.datasets]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _study_seconds(run: dict[str, Any]) -> float:
    return sum(float(study["seconds"]) for study in run["studies"])


def summarise(
    size: int, slices: int, runs: dict[str, list[dict[str, Any]]], uids: list[str]
) -> list[str]:
    """Markdown rows for one study size."""
    rows = []
    stock = runs["stock"]
    stock_first = median([r["studies"][0]["seconds"] for r in stock])
    stock_warm = median([r["studies"][1]["seconds"] for r in stock])
    stock_rss = median([r["peak_rss_mib"] for r in stock])
    for pipeline, results in runs.items():
        first = median([r["studies"][0]["seconds"] for r in results])
        warm = median([r["studies"][1]["seconds"] for r in results])
        startup = median([r["process_seconds"] - _study_seconds(r) for r in results])
        rss = median([r["peak_rss_mib"] for r in results])
        stages = results[0]["studies"][1]["stages"]  # warm study of the first run
        if pipeline == "stock":
            same = "–"
        else:
            ours = results[0]["studies"][0]["seg"]
            same = f"{100 * agreement(ours, stock[0]['studies'][0]['seg'], uids):.5f} %"
        rows.append(
            f"| {size}×{size}×{slices} | {pipeline} | {startup:.1f} s | {first:.2f} s "
            f"| {stock_first / first:.2f}× | {warm:.2f} s | {stock_warm / warm:.2f}× "
            f"| {rss:.0f} MiB | {rss / stock_rss:.2f} | {same} "
            f"| {', '.join(f'{k} {v:.2f}' for k, v in stages.items())} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="slices")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per pipeline")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--size", type=int, default=SIZE, help="in-plane size (default 512)")
    parser.add_argument(
        "--checkpoint", type=Path, help="checkpoint at --size (default: random init)"
    )
    parser.add_argument("--threads", type=int, default=2, help="inference threads per pipeline")
    parser.add_argument("--quantize", action="store_true", help="also run the int8 variant")
    parser.add_argument("--child", choices=["stock", "pulmoseg"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--study", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    if args.runs < 1 or min(args.sizes) < 1:
        parser.error("--runs and --sizes must be at least 1")

    work = args.out or Path(tempfile.mkdtemp(prefix="pulmoseg-vs-stock-"))
    work.mkdir(parents=True, exist_ok=True)
    models = prepare_models(work, args.checkpoint, args.quantize, args.size)
    pipelines = [*PIPELINES, *([INT8] if args.quantize else [])]
    rows = []
    for slices in args.sizes:
        study, _ = phantom_study(work / f"study{slices}", slices, args.size)
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in pipelines}
        for run in range(args.runs):
            order = pipelines if run % 2 == 0 else pipelines[::-1]  # alternate who goes first
            for pipeline in order:
                print(f"{slices} slices, run {run + 1}/{args.runs}: {pipeline} …", flush=True)
                out = work / "runs" / f"{slices}" / f"{pipeline}-{run}"
                runs[pipeline].append(
                    run_child(pipeline, models[pipeline], study, out, args.threads)
                )
        rows += summarise(args.size, slices, runs, source_uids(study))
        (work / f"runs{slices}.json").write_text(json.dumps(runs, indent=1))

    print(
        f"\n{args.runs} fresh process(es) per pipeline and size, {args.threads} inference "
        f"threads, medians; ratios are stock ÷ pulmoseg for time, pulmoseg ÷ stock for memory"
    )
    print(
        "| study | pipeline | start-up + imports | first study (model load incl.) | vs stock "
        "| warm study | vs stock | peak RSS | ÷ stock | same labels as stock "
        "| stages of the warm study (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
