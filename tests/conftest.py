"""Shared, session-scoped real data: phantom studies, a briefly trained and exported model.

Everything is generated at test time (small sizes, fixed seeds); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")

TEST_SIZE = 64
TEST_SLICES = 24


@dataclass(frozen=True)
class PhantomStudyPaths:
    root: Path
    study_id: str
    dicom_dir: Path
    image: Path
    label: Path


def _studies(manifest: Path) -> list[dict]:
    return json.loads(manifest.read_text())["studies"]


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight labeled 64×64×24 phantom studies (training data of the session model)."""
    from training.phantom import generate_dataset

    root = tmp_path_factory.mktemp("phantom_train")
    generate_dataset(root, studies=8, seed=11, size=TEST_SIZE, slices=TEST_SLICES, progress=False)
    return root


@pytest.fixture(scope="session")
def held_out_study(tmp_path_factory: pytest.TempPathFactory) -> PhantomStudyPaths:
    """One phantom study with lesions that no model has seen."""
    from training.phantom import generate_dataset

    root = tmp_path_factory.mktemp("phantom_test")
    manifest = generate_dataset(
        root,
        studies=1,
        seed=4242,
        size=TEST_SIZE,
        slices=TEST_SLICES,
        lesion_free_fraction=0.0,
        progress=False,
    )
    study = _studies(manifest)[0]
    return PhantomStudyPaths(
        root, study["id"], root / study["dicom"], root / study["image"], root / study["label"]
    )


@pytest.fixture(scope="session")
def trained_checkpoint(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small network trained for about half a minute on the session phantoms."""
    from training.config import config_from_dict
    from training.experiment import train_supervised

    out = tmp_path_factory.mktemp("train")
    config = config_from_dict(
        {
            "output_dir": str(out),
            "seed": 0,
            "data": {"root": str(phantom_dataset), "val_fraction": 0.25},
            "model": {"features": [8, 8, 16, 32, 64, 8], "input_size": [TEST_SIZE, TEST_SIZE]},
            "optim": {"epochs": 4, "steps_per_epoch": 30, "batch_size": 8, "lr": 0.005},
            "export": {"name": "pulmoseg-test", "version": "0.0.1"},
        }
    )
    return train_supervised(config, progress=False).best_checkpoint


@pytest.fixture(scope="session")
def exported_model(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session model exported to ONNX (manifest included, parity checked)."""
    from training.export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("model") / "model.onnx"
    export_onnx(trained_checkpoint, path)
    return path


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (tests/postgres_server.py), removed afterwards.

    Skips only when the Debian binaries are missing (scripts/setup.sh installs them).
    """
    from tests.postgres_server import PostgresServer, find_binaries

    binaries = find_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; install Debian 'postgresql'")
    server = PostgresServer(binaries)
    try:
        server.start()
        yield server
    finally:
        server.remove()


_DATABASES = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database per test, once on a SQLite file and once on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    server = request.getfixturevalue("postgres_server")
    if not server.running:  # a previous test stopped it on purpose
        server.start()
    return server.create_database(f"test_{next(_DATABASES)}")
