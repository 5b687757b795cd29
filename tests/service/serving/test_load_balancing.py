"""Client-side load balancing over replicas: two real servers on loopback, one client.

A Kubernetes headless Service makes DNS return every pod's address; gRPC's ``ipv4:`` target
hands the client the same kind of address list without DNS, so this is what a client sees
behind ``dns:///pulmoseg-headless...``. With ``pick_first`` (gRPC's default, and what a
ClusterIP amounts to) every study lands on one replica; with ``round_robin`` they alternate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client.client import LoadBalancing, SegmentationClient
from service.serving.server import RunningServer, build_server
from service.serving.settings import load_settings

STUDIES = 4


@pytest.fixture(scope="module")
def replicas(exported_model: Path) -> Iterator[list[RunningServer]]:
    started: list[RunningServer] = []
    try:
        for _ in range(2):
            settings = load_settings(
                env={}, model_path=exported_model, port=0, metrics_enabled=False, max_workers=4
            )
            started.append(build_server(settings))
        for running in started:
            assert running.wait_until_ready(120), f"model did not load: {running.load_error!r}"
        yield started
    finally:
        for running in started:
            running.stop(grace=1)


def ok_studies(running: RunningServer) -> float:
    value = running.metrics.registry.get_sample_value(
        "pulmoseg_requests_total", {"method": "SegmentStudy", "code": "OK"}
    )
    return value or 0.0


def spread(replicas: list[RunningServer], policy: str, study_dir: Path) -> list[float]:
    """Studies each replica served for STUDIES calls of one client with ``policy``."""
    before = [ok_studies(r) for r in replicas]
    target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
    with SegmentationClient(target, timeout_s=120, load_balancing=policy) as client:
        client.wait_until_serving(30)
        for _ in range(STUDIES):
            result = client.segment_directory(study_dir)
            assert result.seg_bytes and result.summary["num_instances"] > 0
    return [ok_studies(r) - b for r, b in zip(replicas, before, strict=True)]


def test_round_robin_spreads_studies_over_both_replicas(
    replicas: list[RunningServer], held_out_study
) -> None:
    assert spread(replicas, "round_robin", held_out_study.dicom_dir) == [2.0, 2.0]


def test_pick_first_sends_every_study_to_one_replica(
    replicas: list[RunningServer], held_out_study
) -> None:
    # What a ClusterIP Service gives a gRPC client: one connection, one pod.
    counts = spread(replicas, LoadBalancing.PICK_FIRST, held_out_study.dicom_dir)
    assert sorted(counts) == [0.0, float(STUDIES)]


def test_unknown_policy_is_named_with_a_hint() -> None:
    with pytest.raises(
        ValueError, match="'load_balancing' must be one of .*Did you mean 'round_robin'"
    ):
        SegmentationClient("127.0.0.1:1", load_balancing="round-robin")
