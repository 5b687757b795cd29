"""The process of one training job: ``python -m service.training_jobs.worker JOB_DIR TOKEN``.

It runs ``pulmoseg train`` (with ``--resume`` once checkpoints exist, so a job restarted after
a crash continues exactly) and ``pulmoseg export`` as subprocesses in its own process group,
publishes the model into the registry, and writes ``result.json`` (a
:class:`~service.training_jobs.job_files.JobResult`) — the one thing the server reads to learn
the outcome, whether it started this process or found it after a restart.
The TOKEN argument is only there so the server can recognise this process by its command line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from service.core.manifest import read_model_manifest
from service.core.run_folder import run_stages
from service.training_jobs import registry
from service.training_jobs.job_files import JobFolder, JobResult
from service.training_jobs.state import JobState

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


class StepFailedError(RuntimeError):
    """A ``pulmoseg`` step ended with an error; the text is what the user should read."""


#: The one-sentence error line every ``pulmoseg`` command ends with when it fails.
_CLI_ERROR = re.compile(r"^pulmoseg [\w-]+: error: (?P<sentence>.+)$")
#: Python warnings (``file.py:12: SomeWarning: text``) and the source line printed under them.
_WARNING = re.compile(r"^\S+:\d+: \w*Warning: ")


def failure_text(log: Path, step: str, code: int) -> str:
    """The failed step's own one-sentence error if it printed one, else the end of its log
    without Python warnings (e.g. Holoscan's stack-size warning) and with the exit code."""
    lines = log_tail(log, 200).splitlines()
    for line in reversed(lines):
        match = _CLI_ERROR.match(line.strip())
        if match:
            return match.group("sentence")
    kept: list[str] = []
    skip_source = False
    for line in lines:
        if _WARNING.match(line):
            skip_source = True
            continue
        if skip_source and line.startswith((" ", "\t")):
            continue
        skip_source = False
        kept.append(line)
    tail = "\n".join(kept[-5:])
    return f"'pulmoseg {step}' stopped with exit code {code}" + (f": {tail}" if tail else ".")


def _run(command: list[str], log: Path, job_dir: Path) -> None:
    with log.open("ab") as out:
        out.write(f"$ pulmoseg {' '.join(command[3:])}\n".encode())
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=job_dir)
    if code != 0:
        raise StepFailedError(failure_text(log, command[3], code))


def run(job_dir: Path) -> JobResult:
    """Train, export and publish; returns the result written to ``result.json``."""
    folder = JobFolder(job_dir)
    job = folder.read_job()
    stages = run_stages(job.stages)
    command = _cli("train", "--config", str(folder.config))
    if folder.run.can_resume(stages):
        command.append("--resume")
    if job.max_steps:
        command += ["--max-steps", str(job.max_steps)]
    _run(command, folder.train_log, job_dir)
    # Stopped early (max_steps) there is no final.pt: the newest stage's best.pt ships.
    checkpoint = folder.run.checkpoint_to_export(stages)

    model_dir = registry.registry_root(job.training_dir) / job.model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = job.model_version or registry.next_version(model_dir)
    partial = registry.partial_dir(job.training_dir, job.model_name, job.job_id)
    partial.mkdir(parents=True, exist_ok=True)
    model = partial / registry.MODEL_FILE_NAME
    export = _cli("export", "--checkpoint", str(checkpoint), "--out", str(model))
    _run([*export, "--model-version", version], folder.train_log, job_dir)
    voldice = read_model_manifest(model).validation_voldice
    registry.RegistryEntry(
        job_id=job.job_id,
        model_name=job.model_name,
        model_version=version,
        data=str(job.data),
        config=folder.config.read_text(),
        checkpoint=str(checkpoint),
        validation_voldice=voldice,
        created_at=datetime.now(UTC),
    ).write(partial)
    published = registry.publish(partial, model_dir, version)
    return JobResult(
        state=JobState.SUCCEEDED,
        model_name=job.model_name,
        model_version=version,
        registry_path=str(published),
        val_voldice=voldice,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = JobFolder(Path(args[0]).resolve())
    try:
        result = run(folder.root)
    except Exception as exc:  # the outcome goes to result.json, where the server reads it
        result = JobResult(state=JobState.FAILED, message=str(exc).strip() or type(exc).__name__)
    folder.write_result(result)
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    raise SystemExit(main())
