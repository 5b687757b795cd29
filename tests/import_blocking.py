"""Run the real service in a subprocess where some packages cannot be imported.

Used to prove what an install leaves out is really not needed: ``pulmoseg[serve]`` (no torch,
training or MONAI core) and the lean image (also no CuPy, CUDA Python bindings …). Without MONAI
core, ``monai`` is a namespace package that holds only ``monai.deploy``; the prelude recreates
exactly that layout.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

#: What ``pulmoseg[serve]`` leaves out besides MONAI core (also used by ``bench/vs_stock.py``).
SERVE_ONLY_BLOCKED = frozenset({"torch", "training", "nibabel", "onnxscript", "tensorboard"})

_PRELUDE = """
import importlib.abc, importlib.util, runpy, sys, types

BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        core = top == "monai" and name != "monai" and not name.startswith("monai.deploy")
        if top in BLOCKED or core:
            raise ModuleNotFoundError(f"No module named {{name!r}} ({label})", name=name)
        return None

location = importlib.util.find_spec("monai").submodule_search_locations
namespace = types.ModuleType("monai")
namespace.__path__ = list(location)
sys.modules["monai"] = namespace
sys.meta_path.insert(0, Blocker())
"""


def blocking_prelude(blocked: Iterable[str], label: str) -> str:
    """Python source that makes ``blocked`` top-level packages and MONAI core unimportable."""
    return _PRELUDE.format(blocked=set(blocked), label=label)


def run_python(script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


def run_app_without(
    blocked: Iterable[str], label: str, study_dir: Path, out: Path, model: Path, extra: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m service.app`` on ``study_dir`` with ``blocked`` unimportable; prints OK."""
    script = blocking_prelude(blocked, label) + textwrap.dedent(
        f"""
        {extra}
        sys.argv = ["service.app", "-i", {str(study_dir)!r}, "-o", {str(out)!r},
                    "-m", {str(model)!r}]
        try:
            runpy.run_module("service.app", run_name="__main__")
        except SystemExit as exc:
            assert not exc.code, exc.code
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
        print("BLOCKED-RUN OK")
        """
    )
    return run_python(script)
