"""Fixtures of the gateway tests: a real gRPC server, a real Orthanc, gateway subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pacs_peers import (
    GATEWAY_AET,
    GatewayProcess,
    Orthanc,
    copy_study,
    free_port,
    start_orthanc,
)

from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings


@pytest.fixture(scope="session")
def segmentation_server(exported_model: Path) -> Iterator[RunningServer]:
    """The gRPC service the gateway feeds (loopback, port 0, the session's model)."""
    settings = load_settings(
        env={}, model_path=exported_model, port=0, metrics_enabled=False, max_workers=4
    )
    running = build_server(settings)
    assert running.wait_until_ready(120), f"model did not load: {running.load_error!r}"
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def orthanc_gateway_port() -> int:
    """The DICOM port Orthanc knows the gateway by (its modality 'pulmoseg')."""
    return free_port()


@pytest.fixture(scope="module")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, orthanc_gateway_port: int
) -> Iterator[Orthanc]:
    server = start_orthanc(
        tmp_path_factory.mktemp("orthanc"),
        modalities={"pulmoseg": [GATEWAY_AET, "127.0.0.1", orthanc_gateway_port]},
    )
    yield server
    server.stop()


@pytest.fixture
def fresh_study(held_out_study, tmp_path: Path) -> Callable[..., tuple[str, list[Path]]]:
    """A copy of the held-out phantom under new UIDs, so every test sends a new study."""
    counter = iter(range(100))

    def make(transfer_syntaxes: list[str] | None = None) -> tuple[str, list[Path]]:
        target = tmp_path / f"study{next(counter)}"
        return copy_study(held_out_study.dicom_dir, target, transfer_syntaxes)

    return make


@pytest.fixture
def gateway_factory(
    tmp_path: Path, segmentation_server: RunningServer, orthanc: Orthanc
) -> Iterator[Callable[..., GatewayProcess]]:
    """Builds ``pulmoseg pacs`` subprocesses (not started) sending to Orthanc by default."""
    made: list[GatewayProcess] = []

    def make(**changes: Any) -> GatewayProcess:
        workdir = tmp_path / f"gateway{len(made)}"
        workdir.mkdir()
        settings: dict[str, Any] = {
            "ae_title": GATEWAY_AET,
            "host": "127.0.0.1",
            "port": free_port(),
            "allowed_calling_aets": ["ORTHANC", "STORESCU"],
            "spool_dir": str(workdir / "spool"),
            "dead_letter_dir": str(workdir / "dead-letter"),
            "study_timeout_s": 2.0,
            "grpc_target": segmentation_server.address,
            "grpc_timeout_s": 120.0,
            "destinations": [orthanc.destination],
            "metrics_port": free_port(),
            "retry_initial_delay_s": 0.5,
            "retry_max_delay_s": 2.0,
            "max_attempts": 6,
            "network_timeout_s": 10.0,
        }
        settings.update(changes)
        gateway = GatewayProcess(workdir, settings)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.stop()
