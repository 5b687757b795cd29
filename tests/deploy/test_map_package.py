"""The MONAI Application Package: holoscan-cli's own checks accept the staged folder, and the
staged app runs a real study from the MAP environment variables alone.

Building the MAP image needs Docker (not available here); everything the packager decides
before it calls Docker — argument validation, application type and command, requirements,
app.json and pkg.json — is run with holoscan-cli's own code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pydicom
import pytest
from packaging.requirements import Requirement

pytest.importorskip("holoscan_cli")
from holoscan_cli.common.enum_types import ApplicationType  # noqa: E402
from holoscan_cli.common.exceptions import UnknownApplicationTypeError  # noqa: E402
from holoscan_cli.packager.config_reader import ApplicationConfiguration  # noqa: E402
from holoscan_cli.packager.models import Models  # noqa: E402
from holoscan_cli.packager.package_command import create_package_parser  # noqa: E402
from holoscan_cli.packager.parameters import PackageBuildParameters  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
MAP_APP_DIR = "/opt/holoscan/app"


def load_stage_map() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stage_map", REPO_ROOT / "scripts" / "stage_map.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stage_map = load_stage_map()


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_map.stage(tmp_path_factory.mktemp("map") / "app")


@pytest.fixture(scope="module")
def models_dir(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packager's layout: <models>/<model name>/<file>.onnx."""
    root = tmp_path_factory.mktemp("models")
    (root / "lung").mkdir()
    shutil.copy2(exported_model, root / "lung" / "model.onnx")
    return root


def packager_args(app: Path, model: Path) -> argparse.Namespace:
    """Parse the documented command line with the packager's own parser and validators."""
    parser = argparse.ArgumentParser(prog="monai-deploy")
    create_package_parser(parser.add_subparsers(dest="command"), "package", [])
    command = stage_map.package_command(app, model, "pulmoseg-map:0.1.0")
    assert command[:2] == ["monai-deploy", "package"]
    return parser.parse_args(command[1:])


def test_staged_folder_has_the_layout_the_packager_expects(staged: Path) -> None:
    assert (staged / "__main__.py").is_file()
    assert (staged / "requirements.txt").is_file()
    assert (staged / "service" / "app" / "__main__.py").is_file()
    assert not list(staged.rglob("__pycache__")), "caches must not be packaged"
    assert not (staged / "training").exists(), "the MAP serves; it carries no training code"


def _pins(text: str) -> dict[str, str]:
    """name -> version of every requirement line; fails on one that is not pinned with ==."""
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)  # pip's own parser
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"not pinned: {line}"
        pins[requirement.name.lower()] = spec.version
    return pins


def test_requirements_are_the_serving_lock_pinned(staged: Path) -> None:
    pins = _pins((staged / "requirements.txt").read_text())
    assert {"onnxruntime-gpu", "highdicom", "pydicom", "numpy", "psycopg"} <= set(pins)
    assert not set(pins) & stage_map.SDK_PACKAGES
    # The Holoscan the SDK was built for, not the newest one pip would pick.
    assert pins["holoscan-cu13"] == "4.2.0"
    assert pins["monai-deploy-app-sdk"] == stage_map.SDK_VERSION == "4.0.0"
    lock = (REPO_ROOT / "requirements" / "serve.lock").read_text()
    for name, version in pins.items():
        assert f"{name}=={version} " in lock.replace("\\", " ").lower(), name


def test_holoscan_cli_accepts_the_package_parameters(staged: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    args = packager_args(staged, model)
    assert args.includes == ["onnx"] and [p.value for p in args.platform] == ["x86_64"]

    build = PackageBuildParameters()
    build.application = args.application
    assert build.application_type == ApplicationType.PythonModule
    assert build.requirements_file_path == staged / "requirements.txt"
    assert json.loads(build.command) == ["python3", MAP_APP_DIR]
    build.models = Models().build(args.models)

    config = ApplicationConfiguration()
    config.read(args.config)
    app_json = config.populate_app_manifest(build).data
    pkg_json = config.populate_package_manifest(build).data
    assert app_json["version"] == pkg_json["version"] == "0.1.0"
    assert app_json["input"]["formats"] == app_json["output"]["formats"] == ["file"]
    assert app_json["environment"]["HOLOSCAN_MODEL_PATH"] == "/opt/holoscan/models"
    assert pkg_json["models"] == {"model": "/opt/holoscan/models/model"}
    assert pkg_json["resources"]["gpu"] == 1


def test_holoscan_cli_rejects_the_bare_service_folder() -> None:
    # The failure the documented command used to hit: no __main__.py at the top of service/.
    with pytest.raises(UnknownApplicationTypeError, match="__main__.py"):
        PackageBuildParameters().application = REPO_ROOT / "service"


def test_stage_refuses_to_overwrite_the_sources() -> None:
    with pytest.raises(ValueError, match="must be a new folder"):
        stage_map.stage(REPO_ROOT / "service")


def test_staged_app_runs_from_the_map_environment(
    staged: Path, models_dir: Path, held_out_study, tmp_path: Path
) -> None:
    out = tmp_path / "output"
    env = {
        **os.environ,
        "HOLOSCAN_INPUT_PATH": str(held_out_study.dicom_dir),
        "HOLOSCAN_OUTPUT_PATH": str(out),
        "HOLOSCAN_MODEL_PATH": str(models_dir),
        "HOLOSCAN_LOG_LEVEL": "WARN",
    }
    # As the MAP runs it: `python3 <app dir>`, from an unrelated working directory.
    result = subprocess.run(
        [sys.executable, str(staged)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.Modality == "SEG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_instances"] == len(list(held_out_study.dicom_dir.rglob("*.dcm")))


def test_staged_app_imports_its_own_copy_of_service(staged: Path, tmp_path: Path) -> None:
    code = "import service, sys; print(service.__file__)"
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(staged)!r}); {code}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(probe.stdout.strip()).parent == staged / "service"


def test_the_packager_writes_a_pinned_dockerfile_up_to_the_docker_build(
    staged: Path, tmp_path: Path
) -> None:
    """holoscan-cli's own code, from the documented command line to the Dockerfile and the
    pip requirements it would build; the next step (docker buildx) needs a Docker engine."""
    from holoscan_cli.common.artifact_sources import ArtifactSources
    from holoscan_cli.packager.arguments import PackagingArguments
    from holoscan_cli.packager.container_builder import PythonAppBuilder

    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    args = packager_args(staged, model)
    assert Path(args.source) == REPO_ROOT / "map" / "artifacts.json"
    artifacts = json.loads(Path(args.source).read_text())
    ArtifactSources(13).validate(artifacts)  # what --source loading checks
    images = artifacts["4.2.0"]["holoscan"]
    assert artifacts["4.2.0"]["holoscan"]["wheel-version"] == "4.2.0"

    build_dir = tmp_path / "build"
    build_dir.mkdir()
    packaging = PackagingArguments(args, str(build_dir))  # reads --source, no download
    builder = PythonAppBuilder(packaging.build_parameters, str(build_dir))
    (platform,) = packaging.platforms
    builder._copy_supporting_files(platform)
    dockerfile = Path(builder._write_dockerfile(platform)).read_text()

    froms = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert images["base-images"]["dgpu"] in froms
    assert "RUN pip install monai-deploy-app-sdk==4.0.0" in dockerfile
    assert "pip install --no-cache-dir --user -r /tmp/requirements.txt" in dockerfile
    pins = _pins((build_dir / "pip" / "requirements.txt").read_text())
    assert pins["holoscan-cu13"] == "4.2.0" and pins["onnxruntime-gpu"]
    assert (build_dir / "app" / "__main__.py").is_file()
    assert (build_dir / "models" / "model" / "model.onnx").is_file()
