"""Job processes: start one in its own session, recognise it after a restart, stop its group.

A job's process is recognised by its pid *and* a random token on its command line, so a pid
reused by an unrelated process after a reboot is never mistaken for the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.training_jobs.job_files import JobFolder

WORKER_MODULE = "service.training_jobs.worker"
#: SIGTERM first; after this many seconds the group gets SIGKILL.
TERMINATE_GRACE_S = 5.0


def start_worker(folder: JobFolder, token: str) -> subprocess.Popen[bytes]:
    """Start the job's worker detached (own session and process group), output to worker.log."""
    log = folder.worker_log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(folder.root), token],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=folder.root,
            env={**os.environ, "PYTHONPATH": _import_root()},
        )
    finally:
        log.close()


def _import_root() -> str:
    """The worker imports ``service`` from the same place as this server (a source tree too)."""
    root = str(Path(__file__).resolve().parents[2])
    extra = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{extra}" if extra else root


def is_job_process(pid: int | None, token: str | None) -> bool:
    """True while ``pid`` runs and its command line carries ``token`` (not a zombie)."""
    if not pid or not token:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = status.rsplit(")", 1)[-1].split()[0] if ")" in status else ""
    return state != "Z" and token.encode() in cmdline.split(b"\0")


def terminate_group(pid: int, token: str, grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM the job's process group, SIGKILL it after ``grace_s``; returns once it is gone."""
    if not is_job_process(pid, token):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30.0
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process of group ``pgid`` remains."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False
