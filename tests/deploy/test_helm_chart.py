"""What a cluster would act on, read from the chart rendered by Helm's own Go library.

Each test names the behaviour a platform engineer relies on: GPU scheduling, a rollout that
works on full GPU nodes, gRPC probes (and TLS-capable exec probes), secrets as files, model
delivery, load-balancing Services, autoscaling, disruption budget, monitoring objects.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_render import (
    CHART_DIR,
    DIGEST,
    PRODUCTION,
    RELEASE,
    VALUE_SETS,
    by_kind,
    one,
    render_objects,
    render_text,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

RUNBOOK_URL = "docs/runbook.md"
# Lint message severities reported by Helm: 1 info, 2 warning, 3 error.
LINT_WARNING = 2


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(objects)["containers"]}


def server(objects: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = containers(objects)
    assert set(by_name) <= {"pulmoseg", "pacs"}, set(by_name)
    return by_name["pulmoseg"]


def pacs_sidecar(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return containers(objects)["pacs"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def test_default_render_has_the_serving_objects(chart: Any) -> None:
    objects = render_objects(chart)
    kinds = sorted(o["kind"] for o in objects)
    # One replica: no PDB (it would block node drains); no optional monitoring objects. The Pod
    # is `helm test`'s, created only by that command.
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "NetworkPolicy",  # the serving pods', and the `helm test` pod's
        "Pod",
        "Service",
        "ServiceAccount",
    ]
    assert one(objects, "Pod")["metadata"]["annotations"]["helm.sh/hook"] == "test"
    for obj in render_objects(chart):
        assert obj["metadata"]["namespace"] == "imaging", obj["kind"]


def test_probes_use_grpc_health_on_the_grpc_port(chart: Any) -> None:
    main = server(render_objects(chart))
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert main[probe]["grpc"] == {"port": ports["grpc"]}, probe
    # Model loading gets minutes, not the seconds that liveness alone would allow.
    startup = main["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] == 300


def test_tls_switches_probes_to_the_tls_capable_exec_probe(chart: Any) -> None:
    main = server(render_objects(chart, PRODUCTION))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert "grpc" not in main[probe], "kubelet's gRPC probe cannot speak TLS"
        assert main[probe]["exec"]["command"][0] == "pulmoseg-healthcheck"
    env = env_of(main)
    assert env["PULMOSEG_TLS_CERT"] == "/var/run/secrets/pulmoseg/tls/tls.crt"
    assert env["PULMOSEG_TLS_KEY"] == "/var/run/secrets/pulmoseg/tls/tls.key"
    assert env["PULMOSEG_TLS_CLIENT_CA"] == "/var/run/secrets/pulmoseg/tls/ca.crt"
    # The probe connects to 127.0.0.1 but must verify the name in the certificate.
    assert env["PULMOSEG_HEALTH_SERVER_NAME"] == "demo-pulmoseg.imaging.svc"


def test_secrets_arrive_as_files_never_as_values(chart: Any) -> None:
    objects = render_objects(chart, PRODUCTION)
    main = server(objects)
    env = env_of(main)
    assert "PULMOSEG_AUTH_TOKEN" not in env
    assert env["PULMOSEG_AUTH_TOKEN_FILE"] == "/var/run/secrets/pulmoseg/auth/token"
    assert env["PULMOSEG_QUALITY_DB_URL_FILE"] == "/var/run/secrets/pulmoseg/quality/url"
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "pulmoseg-token"
    assert volumes["tls"]["secret"]["secretName"] == "pulmoseg-tls"
    assert volumes["quality"]["secret"]["secretName"] == "pulmoseg-quality-db"
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    for name in ("auth", "tls", "quality"):
        assert mounts[name]["readOnly"] is True
        assert mounts[name]["mountPath"] == f"/var/run/secrets/pulmoseg/{name}"


def test_pod_runs_non_root_with_read_only_root_and_writable_tmp(chart: Any) -> None:
    objects = render_objects(chart)
    pod = pod_spec(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "demo-pulmoseg"
    main = server(objects)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize(
    ("values", "expected_gpus"),
    [(None, None), ({"gpu": {"enabled": False, "count": 4}}, None), (VALUE_SETS["gpu"], 2)],
)
def test_gpu_limit_and_scheduling_only_when_enabled(
    chart: Any, values: dict[str, Any] | None, expected_gpus: int | None
) -> None:
    objects = render_objects(chart, values)
    resources = server(objects)["resources"]
    assert resources["limits"].get("nvidia.com/gpu") == expected_gpus
    assert "nvidia.com/gpu" not in resources.get("requests", {})
    # The CPU and memory limits from values survive the GPU limit being merged in.
    assert resources["limits"]["memory"] == "6Gi"
    assert resources["limits"]["cpu"] == "4"
    env = env_of(server(objects))
    assert env.get("PULMOSEG_REQUIRE_GPU") == ("true" if expected_gpus else None)
    tolerations = pod_spec(objects).get("tolerations", [])
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations) == bool(expected_gpus)


def test_gpu_runtime_class_and_node_selector(chart: Any) -> None:
    values = {
        "gpu": {"enabled": True, "runtimeClassName": "nvidia", "nodeSelector": {"gpu": "h100"}},
        "nodeSelector": {"zone": "a"},
    }
    pod = pod_spec(render_objects(chart, values))
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"zone": "a", "gpu": "h100"}


def test_stack_size_for_holoscan_is_passed_to_the_entry_point(chart: Any) -> None:
    env = env_of(server(render_objects(chart, {"holoscan": {"stackSizeKiB": 65536}})))
    assert env["PULMOSEG_STACK_KIB"] == "65536"


def test_rollout_without_surge_for_full_gpu_nodes(chart: Any) -> None:
    default = one(render_objects(chart), "Deployment")["spec"]["strategy"]
    assert default == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    full = one(render_objects(chart, PRODUCTION), "Deployment")["spec"]["strategy"]
    assert full["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    with pytest.raises(helm.HelmRenderError, match="cannot both be 0"):
        chart.render({"strategy": {"maxSurge": 0, "maxUnavailable": 0}}, name=RELEASE)


def pacs_env_fields(container: dict[str, Any]) -> dict[str, Any]:
    """The gateway's PULMOSEG_PACS_* variables by PacsSettings field (``_FILE``: read by the
    image's entry point into the variable without the suffix)."""
    from service.pacs.settings import ENV_PREFIX

    fields = {}
    for name, value in env_of(container).items():
        assert name.startswith(ENV_PREFIX), f"{name} is not a gateway setting"
        fields[name.removeprefix(ENV_PREFIX).removesuffix("_FILE").lower()] = value
    return fields


def test_pacs_gateway_is_a_sidecar_with_its_own_settings(chart: Any) -> None:
    from service.core.settings_base import env_names
    from service.pacs.settings import ENV_PREFIX, PacsSettings, load_pacs_settings

    objects = render_objects(chart, VALUE_SETS["pacs"])
    main, gateway = server(objects), pacs_sidecar(objects)
    # The server knows nothing of the gateway; no variable that no settings model reads.
    assert not [name for name in env_of(main) if name.startswith("PULMOSEG_PACS_")]
    assert {p["name"] for p in main["ports"]} == {"grpc", "metrics"}
    assert gateway["image"] == main["image"]
    assert gateway["command"] == ["pulmoseg-entrypoint", "pulmoseg", "pacs"]
    assert "args" not in gateway
    # Every variable names a field of the gateway's settings model: a rename breaks this test.
    fields = pacs_env_fields(gateway)
    known = {name for names in env_names(PacsSettings, ENV_PREFIX).values() for name in names}
    unknown = {name.removesuffix("_FILE") for name in env_of(gateway)} - known
    assert unknown == set(), f"PULMOSEG_PACS_* variables that PacsSettings does not read: {unknown}"
    assert fields["ae_title"] == "LUNGSEG"
    assert fields["host"] == "0.0.0.0"
    assert fields["port"] == "11112"
    assert fields["grpc_target"] == "127.0.0.1:50051", "the server container, over loopback"
    assert fields["grpc_token"] == "/var/run/secrets/pulmoseg/auth/token"
    assert "PULMOSEG_PACS_GRPC_TOKEN_FILE" in env_of(gateway), "the token arrives as a file"
    assert fields["destinations"] == "ORTHANC@pacs.hospital.local:4242,ARCHIVE@10.0.0.7:104"
    assert fields["allowed_calling_aets"] == "ORTHANC"
    assert (fields["metrics_host"], fields["metrics_port"]) == ("0.0.0.0", "9091")
    assert fields["spool_dir"] == "/var/lib/pulmoseg/pacs/spool"
    assert fields["dead_letter_dir"] == "/var/lib/pulmoseg/pacs/dead-letter"
    # The gateway accepts the rendered settings (the token file replaced by its content).
    env = {k: v for k, v in env_of(gateway).items() if not k.endswith("_FILE")}
    settings = load_pacs_settings(env={**env, "PULMOSEG_PACS_GRPC_TOKEN": "secret"})
    assert settings.port == 11112
    assert settings.metrics.port == 9091
    assert [d.name for d in settings.destinations] == [
        "ORTHANC@pacs.hospital.local:4242",
        "ARCHIVE@10.0.0.7:104",
    ]
    assert settings.spool.dead_letter_path.parent == settings.spool.dir.parent
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"dicom": settings.port, "pacs-metrics": settings.metrics.port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"] == {"path": "/healthz", "port": "pacs-metrics"}
    assert gateway["securityContext"] == main["securityContext"]
    assert gateway["resources"]["limits"]["memory"] == "2Gi"
    assert "nvidia.com/gpu" not in gateway["resources"]["limits"]


def test_pacs_spool_on_the_claim_or_an_emptydir(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["pacs"])
    mounts = {m["name"]: m for m in pacs_sidecar(objects)["volumeMounts"]}
    assert mounts["pacs-spool"]["mountPath"] == "/var/lib/pulmoseg/pacs"
    assert mounts["auth"]["readOnly"] is True
    assert "pacs-spool" not in {m["name"] for m in server(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["pacs-spool"]["persistentVolumeClaim"] == {"claimName": "pulmoseg-spool"}
    # One writer per spool: the old pod stops before the new one starts.
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    trial = render_objects(chart, VALUE_SETS["monitoring"])
    volumes = {v["name"]: v for v in pod_spec(trial)["volumes"]}
    assert volumes["pacs-spool"]["emptyDir"] == {"sizeLimit": "24Gi"}
    assert one(trial, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    notes = render_text(chart, VALUE_SETS["monitoring"])["pulmoseg/templates/NOTES.txt"]
    assert "WARNING: the spool is an emptyDir" in notes
    assert "emptyDir" not in render_text(chart, VALUE_SETS["pacs"])["pulmoseg/templates/NOTES.txt"]


def test_service_and_network_policy_expose_the_dicom_port_when_pacs_is_on(chart: Any) -> None:
    objects = render_objects(chart, {**VALUE_SETS["pacs"], "service": {}})
    service = one(objects, "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics", "dicom", "pacs-metrics"}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["dicom"]["port"] == 11112
    assert ports["dicom"]["targetPort"] == "dicom"
    assert ports["pacs-metrics"]["targetPort"] == "pacs-metrics"
    deployment = one(objects, "Deployment")["spec"]
    assert service["spec"]["selector"] == deployment["selector"]["matchLabels"]
    policy = one(objects, "NetworkPolicy", "demo-pulmoseg")["spec"]
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"grpc", "dicom", "metrics", "pacs-metrics"}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert {4242, 104} <= egress_ports, "the gateway must reach its destinations"
    restricted = {"pacs": {**VALUE_SETS["pacs"]["pacs"]}, "networkPolicy": {}}
    peer = [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    restricted["networkPolicy"]["dicomFrom"] = peer
    rules = one(render_objects(chart, restricted), "NetworkPolicy", "demo-pulmoseg")["spec"][
        "ingress"
    ]
    (dicom_rule,) = [r for r in rules if r["ports"][0]["port"] == "dicom"]
    assert dicom_rule["from"] == peer
    no_pacs = render_objects(chart)
    assert "dicom" not in {p["name"] for p in one(no_pacs, "Service")["spec"]["ports"]}
    assert set(containers(no_pacs)) == {"pulmoseg"}


def test_service_monitor_scrapes_the_pacs_gateway(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["monitoring"])
    endpoints = {e["port"]: e for e in one(objects, "ServiceMonitor")["spec"]["endpoints"]}
    assert endpoints["pacs-metrics"]["path"] == "/metrics"
    fields = pacs_env_fields(pacs_sidecar(objects))
    assert fields["stow_url"] == "https://pacs.hospital.local/dicom-web"
    assert "destinations" not in fields
    egress = one(objects, "NetworkPolicy", "demo-pulmoseg")["spec"]["egress"]
    assert 443 in {p["port"] for rule in egress for p in rule["ports"]}


def test_quality_records_in_sqlite_on_a_claim_for_one_replica(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["quality-sqlite"])
    main = server(objects)
    env = env_of(main)
    assert env["PULMOSEG_QUALITY_DB_PATH"] == "/var/lib/pulmoseg/quality/quality.db"
    assert "PULMOSEG_QUALITY_DB_URL_FILE" not in env
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    assert mounts["quality-data"]["mountPath"] == "/var/lib/pulmoseg/quality"
    assert "readOnly" not in mounts["quality-data"]
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["quality-data"]["persistentVolumeClaim"] == {"claimName": "pulmoseg-quality"}
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    from service.serving.settings import load_settings

    settings = load_settings(env={"PULMOSEG_QUALITY_DB_PATH": env["PULMOSEG_QUALITY_DB_PATH"]})
    assert str(settings.records.db_path) == "/var/lib/pulmoseg/quality/quality.db"
    notes = render_text(chart)["pulmoseg/templates/NOTES.txt"]
    assert "Quality records: in memory only" in notes


def test_headless_service_for_client_side_round_robin(chart: Any) -> None:
    assert len(by_kind(render_objects(chart), "Service")) == 1
    services = {
        s["metadata"]["name"]: s for s in by_kind(render_objects(chart, PRODUCTION), "Service")
    }
    headless = services["demo-pulmoseg-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == services["demo-pulmoseg"]["spec"]["selector"]
    assert {p["name"] for p in headless["spec"]["ports"]} >= {"grpc"}


def test_model_comes_from_the_pvc_and_args_point_at_it(chart: Any) -> None:
    values = {"model": {"persistentVolumeClaim": "lung-models", "file": "v2.onnx"}}
    objects = render_objects(chart, values)
    pod = pod_spec(objects)
    assert "initContainers" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {
        "claimName": "lung-models",
        "readOnly": True,
    }
    main = server(objects)
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in main["volumeMounts"]
    args = main["args"]
    assert args[0] == "serve"
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--model"] == "/models/v2.onnx"
    assert options["--settings"] == "/etc/pulmoseg/settings.yaml"
    assert (options["--port"], options["--metrics-port"]) == ("50051", "9090")
    assert options["--host"] == options["--metrics-host"] == "0.0.0.0"
    assert main["image"] == "pulmoseg:0.1.0"


def test_model_downloaded_by_an_init_container_with_checksum(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["model-url"])
    pod = pod_spec(objects)
    (init,) = pod["initContainers"]
    assert init["image"] == server(objects)["image"], "the init step reuses the server image"
    env = env_of(init)
    assert env["MODEL_URL"] == "https://models.example.org/lung/v3.onnx"
    assert env["MODEL_DEST"] == "/models/model.onnx"
    assert env["MODEL_SHA256"] == "0" * 64
    assert init["command"] == ["python3", "/etc/pulmoseg/fetch-model.py"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["model"]
    script = one(objects, "ConfigMap")["data"]["fetch-model.py"]
    assert script == (CHART_DIR / "files" / "fetch-model.py").read_text()
    egress_ports = [
        p["port"]
        for rule in one(objects, "NetworkPolicy", "demo-pulmoseg")["spec"]["egress"]
        for p in rule["ports"]
    ]
    assert 443 in egress_ports


def test_model_copied_from_a_model_image(chart: Any) -> None:
    values = {
        "model": {
            "source": "image",
            "image": {"repository": "reg/m", "digest": DIGEST, "path": "/m/v3.onnx"},
        }
    }
    (init,) = pod_spec(render_objects(chart, values))["initContainers"]
    assert init["image"] == f"reg/m@{DIGEST}"
    assert init["command"] == ["cp", "/m/v3.onnx", "/models/model.onnx"]


def test_image_digest_pins_the_exact_build(chart: Any) -> None:
    assert server(render_objects(chart, PRODUCTION))["image"] == f"pulmoseg@{DIGEST}"


def test_settings_configmap_and_rollout_on_change(chart: Any) -> None:
    objects = render_objects(chart, {"config": {"limits": {"max_concurrent_studies": 4}}})
    settings = yaml.safe_load(one(objects, "ConfigMap")["data"]["settings.yaml"])
    assert settings == {
        "applicability_policy": "segment_and_flag",
        "log": {"format": "json"},
        "limits": {"max_concurrent_studies": 4, "max_workers": 8},
        "quality": {"score": {}},
    }
    before = one(render_objects(chart), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    after = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"], "pods must roll on new settings"


def test_autoscaler_on_cpu_and_studies_in_progress(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["autoscaling"])
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "demo-pulmoseg"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "pulmoseg_studies_in_progress"
    assert "replicas" not in one(objects, "Deployment")["spec"], "the HPA owns the replica count"
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    with pytest.raises(helm.HelmRenderError, match="minReplicas .* must not exceed"):
        chart.render(
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, name=RELEASE
        )


@pytest.mark.parametrize(("replicas", "has_pdb"), [(1, False), (2, True), (3, True)])
def test_pdb_only_when_it_cannot_block_drains(chart: Any, replicas: int, has_pdb: bool) -> None:
    objects = render_objects(chart, {"replicaCount": replicas})
    pdbs = by_kind(objects, "PodDisruptionBudget")
    assert bool(pdbs) == has_pdb
    if pdbs:
        selector = pdbs[0]["spec"]["selector"]["matchLabels"]
        assert selector == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]


def test_monitoring_objects_render_the_files(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["monitoring"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"},
        {"port": "pacs-metrics", "path": "/metrics", "interval": "30s"},
    ]
    # The file with this release's namespace, job (the Service name) and runbook filled in.
    text = (
        (CHART_DIR / "files" / "prometheus-rules.yaml")
        .read_text()
        .replace("__NAMESPACE__", "imaging")
        .replace("__JOB__", "demo-pulmoseg")
        .replace("__RUNBOOK_URL__", RUNBOOK_URL)
    )
    assert one(objects, "PrometheusRule")["spec"]["groups"] == yaml.safe_load(text)["groups"]
    assert "__" not in json.dumps(one(objects, "PrometheusRule")["spec"])
    dashboard = one(objects, "ConfigMap", "demo-pulmoseg-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART_DIR / "files" / "grafana-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["pulmoseg.json"]) == shipped


def test_prometheus_rule_groups_come_from_the_file(chart: Any, tmp_path: Path) -> None:
    copy = tmp_path / "pulmoseg"
    shutil.copytree(CHART_DIR, copy)
    group = {
        "name": "pulmoseg",
        "rules": [{"alert": "PulmosegDown", "expr": "up == 0", "for": "5m"}],
    }
    (copy / "files" / "prometheus-rules.yaml").write_text(yaml.safe_dump({"groups": [group]}))
    with helm.Chart.load(copy) as other:
        objects = render_objects(other, {"monitoring": {"prometheusRule": {"enabled": True}}})
    assert one(objects, "PrometheusRule")["spec"]["groups"] == [group]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "three"}, "/replicaCount.*want integer"),
        ({"gpu": {"enabeld": True}}, "additional properties 'enabeld' not allowed"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        ({"model": {"source": "s3"}}, "/model/source"),
        ({"config": {"limits": {"max_concurent_studies": 3}}}, "'max_concurent_studies' not"),
        ({"config": {"max_concurrent_studies": 3}}, "'max_concurrent_studies' not allowed"),
        ({"training": {"kind": "MPIJob"}}, "/training/kind"),
        ({"holoscan": {"stackSizeKiB": 1024}}, "/holoscan/stackSizeKiB"),
        ({"qualityRecords": {"existingSecret": "db"}}, "'qualityRecords' not allowed"),
        ({"quality": {"persistence": {"existingClam": "q"}}}, "'existingClam' not allowed"),
        ({"pacs": {"destination": ["A@h:1"]}}, "'destination' not allowed"),
        ({"pacs": {"destinations": ["pacs.local:4242"]}}, "/pacs/destinations/0"),
        ({"pacs": {"spool": {"existingclaim": "s"}}}, "'existingclaim' not allowed"),
        ({"pacs": {"env": {"PULMOSEG_PORT": "1"}}}, "'PULMOSEG_PORT' does not match pattern"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        chart.render(values, name=RELEASE)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"persistentVolumeClaim": ""}}, "model.persistentVolumeClaim must name"),
        ({"model": {"source": "url"}}, "model.url must be set"),
        ({"gpu": {"enabled": True, "count": 0}}, "gpu.count must be at least 1.*got 0"),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.existingSecret"),
        ({"pacs": {"enabled": True}}, "pacs.enabled needs pacs.destinations"),
        (
            {**VALUE_SETS["pacs"], "tls": {"enabled": True, "existingSecret": "t"}},
            "pacs.enabled cannot be combined with tls.enabled",
        ),
        (
            {**VALUE_SETS["pacs"], "replicaCount": 2},
            "PACS spool has a single writer, but up to 2 replicas",
        ),
        (
            {
                "quality": {
                    "database": {"existingSecret": "db"},
                    "persistence": {"existingClaim": "q"},
                }
            },
            "not both",
        ),
    ],
)
def test_incomplete_values_fail_with_a_clear_message(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name=RELEASE)


@pytest.mark.parametrize(
    "scale",
    [
        {"replicaCount": 2},
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}},
    ],
)
def test_sqlite_quality_records_refuse_several_replicas(chart: Any, scale: dict[str, Any]) -> None:
    values = {**VALUE_SETS["quality-sqlite"], **scale}
    with pytest.raises(helm.HelmRenderError) as failure:
        chart.render(values, name=RELEASE)
    message = str(failure.value)
    assert "quality.persistence.existingClaim" in message
    assert "only a single replica may write" in message
    assert "quality.database.existingSecret" in message, "the message names the way out"
    # One replica, or a shared database, renders.
    chart.render({**VALUE_SETS["quality-sqlite"], "replicaCount": 1}, name=RELEASE)
    shared = {"replicaCount": 3, "quality": {"database": {"existingSecret": "db"}}}
    assert "PULMOSEG_QUALITY_DB_URL_FILE" in env_of(server(render_objects(chart, shared)))


def test_notes_tell_how_to_reach_and_balance(chart: Any) -> None:
    notes = render_text(chart, PRODUCTION)["pulmoseg/templates/NOTES.txt"]
    assert "grpcurl -cacert" in notes
    assert "dns:///demo-pulmoseg-headless.imaging.svc:50051" in notes
    plain = render_text(chart)["pulmoseg/templates/NOTES.txt"]
    assert "set image.digest" in plain
    assert "service.headless.enabled=true" in plain


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str) -> None:
    report = helm.lint(CHART_DIR, VALUE_SETS[name] or None, strict=True, kube_version="v1.27.0")
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
