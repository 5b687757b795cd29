"""The process of one training job: ``python -m service.training_jobs.worker JOB_DIR TOKEN``.

It runs ``pulmoseg train`` (with ``--resume`` once checkpoints exist, so a job restarted after
a crash continues exactly) and ``pulmoseg export`` as subprocesses in its own process group,
publishes the model into the registry, and writes ``result.json`` — the one thing the server
reads to learn the outcome, whether it started this process or found it after a restart.
The TOKEN argument is only there so the server can recognise this process by its command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.core.manifest import read_model_manifest
from service.training_jobs import registry

RESULT_FILE = "result.json"
JOB_FILE = "job.json"
CONFIG_FILE = "config.yaml"
TRAIN_DIR = "train"
TRAIN_LOG = "train.log"
#: Lines of a failed step's log kept in the job record (training logs carry no patient data:
#: they name stages, steps and losses, and studies only by dataset ids).
LOG_TAIL_LINES = 15


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite one line with carriage returns: keep only their final state.
    kept = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join([line for line in kept if line.strip()][-lines:])[-4000:]


def _run(command: list[str], log: Path, job_dir: Path) -> None:
    with log.open("ab") as out:
        out.write(f"$ pulmoseg {' '.join(command[3:])}\n".encode())
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=job_dir)
    if code != 0:
        raise RuntimeError(f"'pulmoseg {command[3]}' exited with code {code}:\n{log_tail(log)}")


def _checkpoint(train_dir: Path) -> Path:
    final = train_dir / "final.pt"
    if final.is_file():
        return final
    # Stopped early (max_steps): the best weights of the newest stage that validated (stage
    # folders, so a recipe that leaves its stages to training's default works too).
    stage_bests = sorted(train_dir.glob("*/best.pt"), key=lambda path: path.stat().st_mtime)
    if stage_bests:
        return stage_bests[-1]
    raise RuntimeError("Training wrote no checkpoint (no final.pt and no stage best.pt).")


def run(job_dir: Path) -> dict[str, Any]:
    """Train, export and publish; returns the result written to ``result.json``."""
    job = json.loads((job_dir / JOB_FILE).read_text())
    train_dir = job_dir / TRAIN_DIR
    command = _cli("train", "--config", str(job_dir / CONFIG_FILE))
    if train_dir.is_dir() and any(train_dir.glob("*/last.pt")):
        command.append("--resume")
    if job.get("max_steps"):
        command += ["--max-steps", str(job["max_steps"])]
    _run(command, job_dir / TRAIN_LOG, job_dir)
    checkpoint = _checkpoint(train_dir)

    training_dir = Path(job["training_dir"])
    model_dir = registry.registry_root(training_dir) / job["model_name"]
    model_dir.mkdir(parents=True, exist_ok=True)
    version = job.get("model_version") or registry.next_version(model_dir)
    partial = registry.partial_dir(training_dir, job["model_name"], job["job_id"])
    partial.mkdir(parents=True, exist_ok=True)
    model = partial / registry.MODEL_FILE_NAME
    export = _cli("export", "--checkpoint", str(checkpoint), "--out", str(model))
    _run([*export, "--model-version", version], job_dir / TRAIN_LOG, job_dir)
    voldice = read_model_manifest(model).validation_voldice
    entry = {
        "job_id": job["job_id"],
        "model_name": job["model_name"],
        "model_version": version,
        "data": job["data"],
        "config": (job_dir / CONFIG_FILE).read_text(),
        "checkpoint": str(checkpoint),
        "validation_voldice": voldice,
        "created_at": datetime.now(UTC).isoformat(),
    }
    (partial / registry.JOB_FILE).write_text(json.dumps(entry, indent=2) + "\n")
    published = registry.publish(partial, model_dir, version)
    return {
        "state": "SUCCEEDED",
        "model_name": job["model_name"],
        "model_version": version,
        "registry_path": str(published),
        "val_voldice": voldice,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job_dir = Path(args[0]).resolve()
    try:
        result = run(job_dir)
    except Exception as exc:  # the outcome goes to result.json, where the server reads it
        result = {"state": "FAILED", "message": f"{type(exc).__name__}: {exc}"}
    temporary = job_dir / f".{RESULT_FILE}"
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.rename(job_dir / RESULT_FILE)
    return 0 if result["state"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    raise SystemExit(main())
