"""The committed gRPC stubs must be exactly what the proto generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.grpc_api import generate

grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) regenerates stubs")


def _generated_grpc_version(path: Path) -> str:
    match = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", path.read_text())
    assert match, f"{path} has no GRPC_GENERATED_VERSION line"
    return match.group(1)


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    from importlib.metadata import version

    committed = generate.PACKAGE_DIR
    installed = version("grpcio-tools")
    made_with = _generated_grpc_version(committed / "segmentation_pb2_grpc.py")
    if installed != made_with:
        pytest.skip(
            f"committed stubs come from grpcio-tools {made_with}, {installed} is installed; "
            "byte equality only holds for the same generator version"
        )
    written = generate.generate(tmp_path)
    assert sorted(p.name for p in written) == [
        "segmentation_pb2.py",
        "segmentation_pb2.pyi",
        "segmentation_pb2_grpc.py",
        "training_pb2.py",
        "training_pb2.pyi",
        "training_pb2_grpc.py",
    ]
    for fresh in written:
        stale = committed / fresh.name
        assert fresh.read_bytes() == stale.read_bytes(), (
            f"{stale} is out of date: run `python -m service.grpc_api.generate`"
        )


def test_generated_grpc_module_imports_relatively() -> None:
    text = (generate.PACKAGE_DIR / "segmentation_pb2_grpc.py").read_text()
    assert "from . import segmentation_pb2" in text
    assert "from pulmoseg" not in text
    training = (generate.PACKAGE_DIR / "training_pb2_grpc.py").read_text()
    assert "from . import training_pb2" in training
    assert "from pulmoseg" not in training


def test_generate_rejects_missing_output_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'out_dir' must be an existing folder"):
        generate.generate(tmp_path / "missing")
