"""The training API pod of the chart (docs/training-service.md): what a platform engineer relies
on when `trainingApi.enabled` is set — one pod of the training image running the server with the
TrainingService on, its work volume, the serving model volume writable for promotions, the
job records in the shared database, GPUs when asked, and serving replicas that poll for a
promoted version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helm_render import DIGEST, RELEASE, VALUE_SETS, by_kind, render_objects

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

from helm_render import CHART_DIR  # noqa: E402

API = f"{RELEASE}-pulmoseg-training-api"


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def _deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def test_training_api_is_off_by_default(chart: Any) -> None:
    assert API not in _deployments(render_objects(chart))


def test_training_api_pod_runs_the_server_with_training_on(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["training-api"])
    deployments = _deployments(objects)
    api = deployments[API]
    assert api["spec"]["replicas"] == 1 and api["spec"]["strategy"]["type"] == "Recreate"
    pod = api["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"pulmoseg-train@{DIGEST}"
    assert container["args"][:3] == ["serve", "--settings", "/etc/pulmoseg/settings.yaml"]
    assert container["args"][4] == "/models/versions"  # the folder of versions
    env = _env(container)
    assert env["PULMOSEG_TRAINING_ENABLED"] == "true"
    assert env["PULMOSEG_TRAINING_DIR"] == "/var/lib/pulmoseg/training"
    assert (env["PULMOSEG_TRAINING_MAX_QUEUED"], env["PULMOSEG_TRAINING_MAX_RUNNING"]) == ("4", "1")
    # jobs confined to the data claim; promotion with its own token, from its own Secret
    assert env["PULMOSEG_TRAINING_DATA_ROOT"] == "/data"
    promote = "/var/run/secrets/pulmoseg/promote/token"
    assert env["PULMOSEG_TRAINING_PROMOTE_TOKEN_FILE"] == promote
    # job records beside the quality records in the production set's shared database
    assert "PULMOSEG_QUALITY_DB_URL_FILE" in env and "PULMOSEG_QUALITY_DB_PATH" not in env
    assert "PULMOSEG_TLS_CERT" in env  # TLS like the serving pods
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["runtimeClassName"] == "nvidia"

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert not mounts["model"].get("readOnly"), "a promotion writes a version into the volume"
    assert mounts["data"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["work"]["persistentVolumeClaim"]["claimName"]
    assert claim == "pulmoseg-training"

    # The serving pods keep the model read-only and poll the folder for promoted versions.
    serving = deployments[f"{RELEASE}-pulmoseg"]["spec"]["template"]["spec"]["containers"][0]
    (model_mount,) = [m for m in serving["volumeMounts"] if m["name"] == "model"]
    assert model_mount["readOnly"] is True
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == API]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "training-api"
    serving_selector = deployments[f"{RELEASE}-pulmoseg"]["spec"]["selector"]["matchLabels"]
    assert not set(serving_selector.items()) <= set(service["spec"]["selector"].items())
    (policy,) = [p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == API]
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]


def test_training_api_without_shared_database_keeps_records_on_its_volume(chart: Any) -> None:
    objects = render_objects(chart, {"trainingApi": {"enabled": True}})
    pod = _deployments(objects)[API]["spec"]["template"]["spec"]
    env = _env(pod["containers"][0])
    assert env["PULMOSEG_QUALITY_DB_PATH"] == "/var/lib/pulmoseg/training/jobs.db"
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"trainingApi": {"enabled": True}, "model": {"source": "url", "url": "https://x/m"}},
            "trainingApi.enabled needs model.source=pvc",
        ),
        (
            {"trainingApi": {"enabled": True, "workClaim": ""}},
            "trainingApi.workClaim must name a PVC",
        ),
    ],
)
def test_training_api_refuses_values_it_cannot_work_with(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name=RELEASE)
