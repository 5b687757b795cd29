"""How long `pip install ".[serve]"` takes to *resolve* in a fresh virtual environment, as the
README tells a new user to run it, and whether pip backtracks.

A fresh venv (the interpreter running this script, its bundled pip), pip's configuration files
and PIP_* variables ignored except PIP_CERT (no site mirror, no constraints), PyPI as the index,
and
``--dry-run --ignore-installed --report``: pip resolves and downloads what it must inspect, but
installs nothing, so the time is the resolver's (plus metadata downloads). Backtracking shows as
several versions of one project downloaded; the script counts them from pip's log.

    python bench/install_resolve.py --timeout 600 --out runs/bench/install_resolve.json

The project is copied (pyproject.toml, README.md, service/) into the temp folder first, so the
working tree is never touched. Needs network access to PyPI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_DOWNLOAD = re.compile(r"Downloading ([A-Za-z0-9_.]+?)-(\d[^-]*)-")


def backtracked(log: str) -> dict[str, int]:
    """Projects of which pip downloaded more than one version (name -> versions tried)."""
    tried = Counter()
    seen = set()
    for name, version in _DOWNLOAD.findall(log):
        key = (name.lower().replace("_", "-"), version)
        if key not in seen:
            seen.add(key)
            tried[key[0]] += 1
    return {name: count for name, count in tried.most_common() if count > 1}


def downloaded_mb(log: str) -> float:
    """Megabytes pip reports downloading (wheels it had to fetch to read their metadata)."""
    total = 0.0
    for size, unit in re.findall(r"Downloading \S+ \(([\d.]+) (kB|MB|GB)\)", log):
        total += float(size) * {"kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]
    return round(total, 1)


def measure(
    extras: str,
    timeout_s: float,
    index_url: str,
    upgrade_pip: bool = False,
    pyproject: Path = REPO_ROOT / "pyproject.toml",
    progress: bool = True,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="pulmoseg-resolve-") as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        shutil.copy2(pyproject, project / "pyproject.toml")
        shutil.copy2(REPO_ROOT / "README.md", project / "README.md")
        shutil.copytree(
            REPO_ROOT / "service", project / "service", ignore=shutil.ignore_patterns("__pycache__")
        )
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
        python = root / "venv" / "bin" / "python"
        if upgrade_pip:  # what `python -m pip install -U pip` would give a new user
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "-U", "pip", "--index-url", index_url],
                env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"},
                check=True,
            )
        pip_version = subprocess.run(
            [str(python), "-m", "pip", "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[1]
        # Proxy and CA settings stay (a site's HTTPS proxy may need its CA: PIP_CERT); pip's
        # other settings and files go, so the run sees what a new user's pip sees.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
        env.update(PIP_CONFIG_FILE="/dev/null", HOME=str(root))
        command = [
            str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--no-cache-dir", "--index-url", index_url, "--report", str(root / "report.json"),
            f".[{extras}]",
        ]  # fmt: skip
        if progress:
            print(f"resolving .[{extras}] with pip {pip_version} (limit {timeout_s:.0f} s) ...")
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout_s
            )
            log, code, timed_out = done.stdout + done.stderr, done.returncode, False
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or b""
            log = out.decode() if isinstance(out, bytes) else out
            code, timed_out = None, True
        elapsed = time.perf_counter() - started
        resolved = 0
        if not timed_out and code == 0:
            resolved = len(json.loads((root / "report.json").read_text())["install"])
    return {
        "extras": extras,
        "pyproject": str(pyproject),
        "pip": pip_version,
        "python": sys.version.split()[0],
        "seconds": round(elapsed, 1),
        "timed_out": timed_out,
        "returncode": code,
        "packages_resolved": resolved,
        "backtracked": backtracked(log),
        "downloaded_mb": downloaded_mb(log),
        "log_tail": log.splitlines()[-5:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="serve")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--index-url", default="https://pypi.org/simple")
    parser.add_argument("--upgrade-pip", action="store_true", help="newest pip in the venv")
    parser.add_argument(
        "--pyproject", type=Path, default=REPO_ROOT / "pyproject.toml", help="e.g. an older one"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    result = measure(args.extras, args.timeout, args.index_url, args.upgrade_pip, args.pyproject)
    state = "TIMED OUT" if result["timed_out"] else f"rc {result['returncode']}"
    print(
        f"{state} after {result['seconds']} s: {result['packages_resolved']} packages, "
        f"{result['downloaded_mb']} MB downloaded; "
        f"backtracked on {result['backtracked'] or 'nothing'}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
