"""``pulmoseg demo``: the whole product once, on phantom data, in a few minutes on a CPU.

phantom studies → supervised training → ONNX export → gRPC server (a real subprocess on a
free loopback port) → ``pulmoseg segment`` uploads a held-out study → DICOM-SEG read back →
VolDice against the phantom's truth, plus where the outputs and the metrics are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from importlib import resources
from pathlib import Path

import numpy as np

from service.core.loopback import free_port
from service.core.segmentation_metrics import per_class_vol_dice
from training.cli.demo_report import class_results, format_table, training_shares
from training.data.volumes import load_nifti_zyx
from training.evaluation.seg_readback import read_seg_labels

DEMO_TRAIN_STUDIES = 20
DEMO_TEST_SEED = 1000
DEMO_TEST_CANDIDATES = 3
SERVER_START_TIMEOUT_S = 120.0


def _step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def run_demo(workdir: Path, *, config_path: Path | None = None) -> int:
    """Run every stage; returns the process exit code."""
    from training.config import load_config
    from training.experiment import train_supervised
    from training.export.onnx_export import export_onnx
    from training.phantom import generate_dataset

    started = time.perf_counter()
    workdir = Path(workdir)
    data_dir, test_dir = workdir / "data", workdir / "test"
    if config_path is None:
        config_path = Path(str(resources.files("training") / "configs" / "demo.yaml"))
    config = load_config(config_path)
    config.data.root, config.output_dir = str(data_dir), str(workdir / "train")

    _step(f"1/5 phantom data: {DEMO_TRAIN_STUDIES} training studies + held-out studies")
    generate_dataset(data_dir, studies=DEMO_TRAIN_STUDIES, seed=config.seed)
    test_manifest = generate_dataset(
        test_dir, studies=DEMO_TEST_CANDIDATES, seed=DEMO_TEST_SEED, lesion_free_fraction=0.0
    )
    # Tiny lesions make VolDice meaningless, so show the candidate with the most lesion voxels.
    test_study = max(
        json.loads(test_manifest.read_text())["studies"],
        key=lambda s: min(s["lesion_voxels"].values()),
    )

    _step("2/5 training (supervised, Dice + cross-entropy)")
    result = train_supervised(config)

    _step("3/5 export to ONNX (parity with PyTorch checked)")
    model_path = workdir / "model.onnx"
    exported = export_onnx(result.best_checkpoint, model_path)
    print(f"max |ORT - PyTorch| = {exported.max_abs_diff:.2e}")

    return serve_and_report(
        workdir,
        model_path,
        test_dir,
        test_study,
        config.model.class_names,
        result.best_checkpoint,
        started,
    )


def serve_and_report(
    workdir: Path,
    model_path: Path,
    test_dir: Path,
    test_study: dict,
    names: tuple[str, ...],
    checkpoint: Path,
    started: float,
) -> int:
    """Steps 4-5: serve the model, segment the held-out study through gRPC, report.

    The service is used only as a user would use it, through ``pulmoseg serve`` and
    ``pulmoseg segment`` in subprocesses (training never imports the service's outer layers),
    and the returned SEG is read back with pydicom alone, independently of the writer.
    """
    data_dir = workdir / "data"
    _step("4/5 gRPC server on loopback, client uploads the held-out study")
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PULMOSEG_LOG_LEVEL="INFO")
    seg_path, summary_path = workdir / "seg.dcm", workdir / "summary.json"
    study_dir = test_dir / test_study["dicom"]
    with (workdir / "server.log").open("w") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--model", str(model_path)]
            + ["--port", str(port), "--metrics-port", str(metrics_port)],
            stdout=server_log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            segment = subprocess.run(
                [sys.executable, "-m", "service.cli", "segment", str(study_dir)]
                + ["--server", f"127.0.0.1:{port}", "--out", str(seg_path)]
                + ["--summary-json", str(summary_path), "--timeout", "300"]
                + ["--wait-for-server", str(SERVER_START_TIMEOUT_S)],
                capture_output=True,
                text=True,
                env=env,
            )
            if segment.returncode != 0:
                raise RuntimeError(
                    f"pulmoseg segment failed: {segment.stderr.strip() or segment.stdout.strip()}"
                    f" (server log: {workdir / 'server.log'})"
                )
            print(segment.stdout.strip())
            metrics_text = (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
                .read()
                .decode()
            )
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    summary = json.loads(summary_path.read_text())
    print(
        f"server 127.0.0.1:{port}: model {summary['model_name']} {summary['model_version']} "
        f"on {summary['provider']}"
    )

    _step("5/5 result: the returned DICOM-SEG read back and compared with the phantom's truth")
    truth, spacing_zyx = load_nifti_zyx(test_dir / test_study["label"])
    seg_labels = read_seg_labels(seg_path, study_dir, names)
    scores = per_class_vol_dice(seg_labels, truth, range(1, len(names)))
    # Why a score is low or undefined (absent class, missed class, rare in training), not just 0.
    train_manifest = data_dir / "manifest.json"
    shares = (
        training_shares(json.loads(train_manifest.read_text())["studies"])
        if train_manifest.is_file()
        else None
    )
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    for line in format_table(class_results(seg_labels, truth, names, voxel_ml, shares)):
        print(line)
    print("\noutputs:")
    print(f"  data        {data_dir}")
    print(f"  checkpoint  {checkpoint}")
    print(f"  model       {model_path}")
    print(f"  DICOM-SEG   {seg_path}")
    print(f"  summary     {summary_path}")
    print(f"  server log  {workdir / 'server.log'}")
    print(
        f"metrics: served at http://127.0.0.1:{metrics_port}/metrics while the server ran; "
        f"run 'pulmoseg serve --model {model_path}' to keep it up. Sample:"
    )
    for line in metrics_text.splitlines():
        if line.startswith(
            (
                "pulmoseg_requests_total",
                "pulmoseg_model_info",
                "pulmoseg_request_duration_seconds_sum",
            )
        ):
            print(f"  {line}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return 0 if scores[1] >= 0.90 else 1
