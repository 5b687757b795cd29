"""Stage the application folder of the pulmoseg MONAI Application Package (MAP).

holoscan-cli's packager takes a folder with ``__main__.py`` (and optionally
``requirements.txt``), copies it to ``/opt/holoscan/app`` and runs it. The service code lives
in the ``service`` package, so the folder is assembled here: ``map/__main__.py``, a clean copy
of ``service/`` (no caches, no generated outputs) and ``requirements.txt``, written from
``pyproject.toml`` (the base dependencies and the ``serve`` extra) so it cannot drift from the
package. The packager installs Holoscan and the MONAI Deploy App SDK itself (matching
``--sdk-version``), so those are left out.

    python scripts/stage_map.py build/map
    monai-deploy package build/map -c app.yaml -t pulmoseg-map:0.1.0 --platform x86_64 \\
        -m runs/demo/model.onnx --includes onnx
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAP_SOURCES = REPO_ROOT / "map"
APP_CONFIG = REPO_ROOT / "app.yaml"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.onnx", "*.pt", "*.dcm")
#: Installed by the packager from its SDK version, not from requirements.txt.
SDK_PACKAGES = frozenset({"monai-deploy-app-sdk", "holoscan-cu13", "holoscan-cli"})


def requirement_name(requirement: str) -> str:
    """Normalised project name of a PEP 508 requirement string."""
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def serve_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """Base dependencies plus the serve extra, minus the SDKs the packager installs."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["serve"]
    return [r for r in wanted if requirement_name(r) not in SDK_PACKAGES]


def stage(dest: str | Path) -> Path:
    """Assemble the MAP application folder at ``dest`` (replaced if it exists)."""
    dest = Path(dest)
    if dest.resolve() in (REPO_ROOT, REPO_ROOT / "service", MAP_SOURCES):
        raise ValueError(f"Argument 'dest' must be a new folder, not the sources: {dest}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(MAP_SOURCES / "__main__.py", dest / "__main__.py")
    lines = ["# Written by scripts/stage_map.py from pyproject.toml (base + serve extra)."]
    (dest / "requirements.txt").write_text("\n".join([*lines, *serve_requirements()]) + "\n")
    shutil.copytree(REPO_ROOT / "service", dest / "service", ignore=_IGNORED)
    return dest


def package_command(app_dir: Path, model: Path, tag: str) -> list[str]:
    """The `monai-deploy package` command line for a staged folder."""
    return [
        "monai-deploy", "package", str(app_dir), "-c", str(APP_CONFIG), "-t", tag,
        "--platform", "x86_64", "-m", str(model), "--includes", "onnx",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder to create (e.g. build/map)")
    parser.add_argument("--model", type=Path, default=Path("runs/demo/model.onnx"))
    parser.add_argument("--tag", default="pulmoseg-map:0.1.0")
    args = parser.parse_args(argv)
    staged = stage(args.dest)
    print(f"staged {staged}; package it with (needs Docker):")
    print("  " + " ".join(package_command(staged, args.model, args.tag)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
