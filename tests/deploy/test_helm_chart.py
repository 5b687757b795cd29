"""Render and lint the Helm chart offline with Helm's own Go library (helm-python-sdk).

What is checked is what a cluster would act on: the rendered Deployment's probes, security
context, GPU resources, volumes and arguments, and the Service's ports.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "pulmoseg"
RELEASE = "demo"
NAMESPACE = "imaging"
GPU_VALUES: dict[str, Any] = {"gpu": {"enabled": True, "count": 2}}

# Lint message severities reported by Helm: 1 info, 2 warning, 3 error.
LINT_WARNING = 2


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Render the chart and index its manifests by kind (one object per kind here)."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects: dict[str, dict[str, Any]] = {}
    for path, text in manifests.items():
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert doc["kind"] not in objects, f"unexpected second {doc['kind']} in {path}"
                objects[doc["kind"]] = doc
    return objects


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_renders_exactly_a_deployment_and_a_service(chart: Any) -> None:
    objects = render(chart)
    assert sorted(objects) == ["Deployment", "Service"]
    assert objects["Deployment"]["metadata"]["name"] == "demo-pulmoseg"


def test_probes_use_grpc_health_on_the_grpc_port(chart: Any) -> None:
    main = container(render(chart))
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert main[probe]["grpc"] == {"port": ports["grpc"]}, probe
    # Model loading gets minutes, not the seconds that liveness alone would allow.
    startup = main["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] == 300


def test_pod_runs_non_root_with_read_only_root_and_writable_tmp(chart: Any) -> None:
    objects = render(chart)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    main = container(objects)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize(
    ("values", "expected_gpus"),
    [(None, None), ({"gpu": {"enabled": False, "count": 4}}, None), (GPU_VALUES, 2)],
)
def test_gpu_limit_present_only_when_enabled(
    chart: Any, values: dict[str, Any] | None, expected_gpus: int | None
) -> None:
    main = container(render(chart, values))
    resources = main["resources"]
    assert resources["limits"].get("nvidia.com/gpu") == expected_gpus
    assert "nvidia.com/gpu" not in resources.get("requests", {})
    # The memory limit from values survives the GPU limit being merged in.
    assert resources["limits"]["memory"] == "6Gi"
    env = {e["name"]: e["value"] for e in main.get("env") or []}
    assert env.get("PULMOSEG_REQUIRE_GPU") == ("true" if expected_gpus else None)


def test_service_exposes_grpc_and_metrics(chart: Any) -> None:
    objects = render(chart)
    service = objects["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == 50051
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["metrics"]["port"] == 9090
    assert ports["metrics"]["targetPort"] == "metrics"
    deployment = objects["Deployment"]["spec"]
    assert service["spec"]["selector"] == deployment["selector"]["matchLabels"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_model_comes_from_the_pvc_and_args_point_at_it(chart: Any) -> None:
    values = {"model": {"persistentVolumeClaim": "lung-models", "file": "v2.onnx"}}
    objects = render(chart, values)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {
        "claimName": "lung-models",
        "readOnly": True,
    }
    main = container(objects)
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in main["volumeMounts"]
    assert main["args"] == [
        "serve",
        "--model",
        "/models/v2.onnx",
        "--port",
        "50051",
        "--metrics-port",
        "9090",
        "--host",
        "0.0.0.0",
        "--metrics-host",
        "0.0.0.0",
    ]
    assert main["image"] == "pulmoseg:0.1.0"


def test_env_values_and_scrape_annotations(chart: Any) -> None:
    values = {
        "env": {"PULMOSEG_LOG_LEVEL": "DEBUG", "PULMOSEG_MAX_STUDIES": 4},
        "podAnnotations": {"team": "imaging"},
    }
    objects = render(chart, values)
    env = {e["name"]: e["value"] for e in container(objects)["env"]}
    assert env == {"PULMOSEG_LOG_LEVEL": "DEBUG", "PULMOSEG_MAX_STUDIES": "4"}
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
        "team": "imaging",
    }


def test_missing_model_claim_fails_rendering(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="model.persistentVolumeClaim must name"):
        chart.render({"model": {"persistentVolumeClaim": ""}}, name=RELEASE)


def test_zero_gpus_with_gpu_enabled_fails_rendering(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="gpu.count must be at least 1.*got 0"):
        chart.render({"gpu": {"enabled": True, "count": 0}}, name=RELEASE)


@pytest.mark.parametrize("values", [None, GPU_VALUES], ids=["default", "gpu"])
def test_helm_lint_is_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART_DIR, values, strict=True, kube_version="v1.30.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= LINT_WARNING]
    assert serious == []


def test_helm_lint_reports_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "pulmoseg"
    shutil.copytree(CHART_DIR, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: ConfigMap\nname: {{ .Values.x\n")
    report = helm.lint(broken)
    assert any("unclosed action" in error for error in report["errors"])
