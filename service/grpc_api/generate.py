"""Regenerate the committed Python stubs from ``protos/pulmoseg/v1/*.proto``.

The stubs are committed so the service runs without grpcio-tools; this entry point (and the test
``tests/service/grpc_api/test_protos_in_sync.py``) keeps them identical to the proto. protoc
writes the
grpc module with an absolute ``from pulmoseg.v1 import ...`` that only works with ``protos/``
layout on ``sys.path``; we rewrite it to a relative import so the stubs live flat in this
package while the descriptor keeps its canonical file name ``pulmoseg/v1/segmentation.proto``.

Usage: ``python -m service.grpc_api.generate [OUT_DIR]`` (default: this package's folder).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILES = ("pulmoseg/v1/segmentation.proto", "pulmoseg/v1/training.proto")
PACKAGE_DIR = Path(__file__).resolve().parent
#: The .pyi type stub lets mypy check the servicer and client against the proto's messages.
_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _relative_imports(text: str) -> str:
    """Turn protoc's ``from pulmoseg.v1 import x_pb2`` into ``from . import x_pb2``."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("from pulmoseg.v1 import "):
            line = "from . import " + line[len("from pulmoseg.v1 import ") :]
        lines.append(line)
    return "".join(lines)


def generate(out_dir: str | Path = PACKAGE_DIR, proto_root: str | Path = PROTO_ROOT) -> list[Path]:
    """Run grpc_tools.protoc on the pulmoseg protos and write the stubs flat into ``out_dir``.

    Returns the written files. Raises RuntimeError with protoc's exit code if compilation fails.
    """
    from grpc_tools import protoc  # build-time dependency only (grpcio-tools)

    out = Path(out_dir)
    root = Path(proto_root)
    if not out.is_dir():
        raise ValueError(f"Argument 'out_dir' must be an existing folder, got '{out}'.")
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="pulmoseg-protoc-") as tmp:
        # protoc's own include folder provides google/protobuf/*.proto (well-known types).
        well_known = Path(protoc.__file__).resolve().parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(root / name) for name in PROTO_FILES),
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"grpc_tools.protoc failed with exit code {code}: {' '.join(args)}")
        for name in PROTO_FILES:
            stem = Path(name).with_suffix("")
            for suffix in _GENERATED_SUFFIXES:
                source = Path(tmp) / f"{stem}{suffix}"
                target = out / source.name
                target.write_text(_relative_imports(source.read_text()))
                written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else PACKAGE_DIR
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(out):
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
