"""Stage the application folder of the pulmoseg MONAI Application Package (MAP).

holoscan-cli's packager takes a folder with ``__main__.py`` (and optionally
``requirements.txt``), copies it to ``/opt/holoscan/app`` and runs it. The service code lives
in the ``service`` package, so the folder is assembled here: ``map/__main__.py``, a clean copy
of ``service/`` (no caches, no generated outputs) and ``requirements.txt``.

The requirements are the serving image's lock (``requirements/serve.lock``: CPython 3.12,
glibc 2.39, the MAP base image's too), every package pinned ``==``, so the MAP holds the
versions the image was tested with. That pins ``holoscan-cu13`` as well: the packager's own
``pip install monai-deploy-app-sdk==<sdk version>`` leaves Holoscan open and would otherwise take
the newest release (4.6 while the SDK was built for 4.2). Hashes are left out: the lock omits
packages on purpose (torch, CuPy; scripts/lock_serve.sh), which pip's hash mode would refuse.

``--source map/artifacts.json`` gives the packager its base and build images (holoscan-cli's
release manifest for Holoscan 4.2.0, CUDA 13) from the repository instead of a download from
GitHub at packaging time; pin an image by digest there (``name:tag@sha256:...``) when your
registry gives you one.

    python scripts/stage_map.py build/map
    monai-deploy package build/map -c app.yaml -t pulmoseg-map:0.1.0 --platform x86_64 \\
        -m runs/demo/model.onnx --includes onnx --sdk monai-deploy --sdk-version 4.0.0 \\
        --source map/artifacts.json
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
SERVE_LOCK = REPO_ROOT / "requirements" / "serve.lock"
#: holoscan-cli's release manifest (base and build images) for the Holoscan of the lock.
ARTIFACTS = MAP_SOURCES / "artifacts.json"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.onnx", "*.pt", "*.dcm")
#: The packaging tool itself: needed to build a MAP, not inside one.
SDK_PACKAGES = frozenset({"holoscan-cli"})
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def requirement_name(requirement: str) -> str:
    """Normalised project name of a PEP 508 requirement string."""
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def serve_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """Base dependencies plus the serve extra (ranges), minus the packaging tool."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["serve"]
    return [r for r in wanted if requirement_name(r) not in SDK_PACKAGES]


def locked_requirements(lock: Path = SERVE_LOCK) -> list[str]:
    """Every package of the serving lock as ``name==version``, minus the packaging tool."""
    pins = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match and requirement_name(match.group(1)) not in SDK_PACKAGES:
            pins.append(f"{match.group(1)}=={match.group(2)}")
    wanted = {requirement_name(r) for r in serve_requirements()}
    missing = wanted - {requirement_name(p) for p in pins}
    if missing:
        raise ValueError(
            f"{lock} lacks {sorted(missing)} of pyproject's serve extra; run scripts/lock_serve.sh"
        )
    return pins


def stage(dest: str | Path) -> Path:
    """Assemble the MAP application folder at ``dest`` (replaced if it exists)."""
    dest = Path(dest)
    if dest.resolve() in (REPO_ROOT, REPO_ROOT / "service", MAP_SOURCES):
        raise ValueError(f"Argument 'dest' must be a new folder, not the sources: {dest}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(MAP_SOURCES / "__main__.py", dest / "__main__.py")
    lines = ["# Written by scripts/stage_map.py: the pins of requirements/serve.lock."]
    (dest / "requirements.txt").write_text("\n".join([*lines, *locked_requirements()]) + "\n")
    shutil.copytree(REPO_ROOT / "service", dest / "service", ignore=_IGNORED)
    return dest


def _locked_version(name: str) -> str:
    for pin in locked_requirements():
        if requirement_name(pin) == name:
            return pin.split("==", 1)[1]
    raise ValueError(f"{SERVE_LOCK} has no {name}")


#: The MONAI Deploy App SDK of the lock, which the packager installs into the MAP.
SDK_VERSION = _locked_version("monai-deploy-app-sdk")


def package_command(app_dir: Path, model: Path, tag: str) -> list[str]:
    """The `monai-deploy package` command line for a staged folder."""
    return [
        "monai-deploy", "package", str(app_dir), "-c", str(APP_CONFIG), "-t", tag,
        "--platform", "x86_64", "-m", str(model), "--includes", "onnx",
        "--sdk", "monai-deploy", "--sdk-version", SDK_VERSION, "--source", str(ARTIFACTS),
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
