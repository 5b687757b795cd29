"""Shared pieces of the training-job tests: a tiny phantom dataset, tiny recipes, a server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings

T = TypeVar("T")
WAIT_S = 120.0

#: Barely trained: a few steps at 32x32, it paints lesions everywhere (low lesion VolDice).
WEAK_CONFIG = """
seed: 1
stages: [supervised]
data: {val_fraction: 0.5}
model: {features: [4, 4, 8, 8, 16, 4], input_size: [32, 32]}
optim: {epochs: 2, steps_per_epoch: 4, batch_size: 4, lr: 0.01, bf16: false, num_threads: 1}
runtime: {tensorboard: false}
"""

#: Trained long enough to learn lung and where lesions are not; progress every 2 steps.
BETTER_CONFIG = """
seed: 1
stages: [supervised]
data: {val_fraction: 0.5, lesion_oversampling: 5.0}
model: {features: [8, 8, 16, 16, 32, 8], input_size: [48, 48]}
optim: {epochs: 2, steps_per_epoch: 12, batch_size: 8, lr: 0.01, bf16: false, num_threads: 1}
runtime: {tensorboard: false, checkpoint_every: 4, log_every_steps: 2}
"""

#: Runs for minutes unless cancelled.
LONG_CONFIG = """
seed: 1
stages: [supervised]
data: {val_fraction: 0.5}
model: {features: [4, 4, 8, 8, 16, 4], input_size: [32, 32]}
optim: {epochs: 200, steps_per_epoch: 50, batch_size: 4, lr: 0.01, bf16: false, num_threads: 1}
runtime: {tensorboard: false, log_every_steps: 1}
"""


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def make_phantom(root: Path) -> Path:
    done = cli(
        "phantom", "--out", str(root), "--studies", "4", "--size", "48", "--slices", "12",
        "--seed", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root


def train_and_export(config_text: str, data: Path, work: Path, out: Path) -> Path:
    """A model made outside the service (the one a server serves before any promotion)."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"
    config.write_text(config_text)
    done = cli("train", "--config", str(config), "--data", str(data), "--output-dir", str(work))
    assert done.returncode == 0, done.stderr[-2000:]
    out.parent.mkdir(parents=True, exist_ok=True)
    done = cli("export", "--checkpoint", str(work / "final.pt"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def start_server(
    model_path: Path, tmp: Path, *, load: bool = False, **overrides: Any
) -> RunningServer:
    """A real server on loopback with training on (development mode: no token, datasets under
    the tests' temporary folder); ``load`` waits for the model."""
    values: dict[str, Any] = {
        "port": 0,
        "metrics_enabled": False,
        "max_workers": 4,
        "model_path": model_path,
        "quality_db_path": tmp / "records.sqlite",
        "training_enabled": True,
        "training_dir": tmp / "training",
        "training_allow_unauthenticated": True,
        "training_data_root": tmp.parent,
    }
    settings = load_settings(env={}, **{**values, **overrides})
    running = build_server(settings, autoload=load)
    if load:
        assert running.wait_until_ready(WAIT_S), f"model did not load: {running.load_error!r}"
    return running


def wait_for(probe: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something truthy (generous: a busy 2-core machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def stop_and_cancel(running: RunningServer) -> None:
    """Stop the server and cancel what it still runs: a test leaves no training process."""
    if running.jobs is not None:
        from service.training_jobs.store import JobState

        for record in running.jobs.store.in_state(JobState.QUEUED, JobState.RUNNING):
            running.jobs.cancel(record.job_id)
    running.stop(grace=1)
