"""What a platform team needs from the chart beyond serving: drain on rollout, database egress,
ingress/GRPCRoute, a separate DICOM Service, spread and priority, site extras, `helm test`, one
scrape per pod, and a training API pod that is labelled, probed and scraped right.

Rendered by Helm's own Go library from the chart's ci/*.yaml value sets (helm_render.py), every
document read with a loader that refuses duplicate keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helm_render import (
    CHART_DIR,
    PRODUCTION,
    VALUE_SETS,
    by_kind,
    load_unique,
    one,
    render_objects,
    render_text,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

FULLNAME = "demo-pulmoseg"


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def _server(objects: list[dict[str, Any]], name: str = FULLNAME) -> dict[str, Any]:
    deployment = one(objects, "Deployment", name)
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _policy_rules_to_port(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [r for r in policy["spec"]["egress"] if any(p["port"] == port for p in r["ports"])]


@pytest.mark.parametrize(
    ("values", "total", "sleep", "margin"),
    [({}, 60, 5, 5), (VALUE_SETS["extras"], 300, 10, 15)],
    ids=["defaults", "long-drain"],
)
def test_the_server_drains_within_the_pod_grace_period(chart, values, total, sleep, margin):
    objects = render_objects(chart, values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    server = pod["containers"][0]
    grace_s = float(_env(server)["PULMOSEG_GRACE_PERIOD_S"])
    assert pod["terminationGracePeriodSeconds"] == total
    assert server["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(sleep)]
    # preStop sleep, then SIGTERM and the drain, then a margin: all before the kubelet's SIGKILL.
    assert sleep + grace_s + margin == total
    assert grace_s > 10, "the server's own default (10 s) cut studies off"


def test_the_grace_arithmetic_refuses_what_cannot_work(chart):
    with pytest.raises(Exception, match=r"terminationGracePeriodSeconds \(10\) must exceed"):
        render_objects(chart, {"terminationGracePeriodSeconds": 10})
    with pytest.raises(Exception, match=r"config.grace_period_s \(51 s\) does not fit"):
        render_objects(chart, {"config": {"grace_period_s": 51}})
    # A shorter drain of one's own is kept (in the settings file, not overridden by the env).
    shorter = render_objects(chart, {"config": {"grace_period_s": 30}})
    assert "PULMOSEG_GRACE_PERIOD_S" not in _env(_server(shorter))
    settings = yaml.safe_load(one(shorter, "ConfigMap", FULLNAME)["data"]["settings.yaml"])
    assert settings["grace_period_s"] == 30
    no_sleep = render_objects(chart, {"shutdown": {"preStopSleepSeconds": 0}})
    assert "lifecycle" not in _server(no_sleep)
    assert _env(_server(no_sleep))["PULMOSEG_GRACE_PERIOD_S"] == "55"


def test_both_network_policies_let_the_pods_reach_the_records_database(chart):
    objects = render_objects(chart, VALUE_SETS["training-api"])
    peer = [{"ipBlock": {"cidr": "10.0.12.5/32"}}]
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    policies.pop(f"{FULLNAME}-test")  # helm test's pod talks to the serving pods only
    assert set(policies) == {FULLNAME, f"{FULLNAME}-training-api"}
    for name, policy in policies.items():
        (rule,) = _policy_rules_to_port(policy, 5432)
        assert rule["to"] == peer, name
    # Without a shared database there is no database egress.
    for policy in by_kind(render_objects(chart), "NetworkPolicy"):
        assert "egress" in policy["spec"], policy["metadata"]["name"]
        assert _policy_rules_to_port(policy, 5432) == []
    # Any address on the port when no peer is given.
    anywhere = {**PRODUCTION, "networkPolicy": {"database": {"port": 6432}}}
    policy = one(render_objects(chart, anywhere), "NetworkPolicy", FULLNAME)
    (rule,) = _policy_rules_to_port(policy, 6432)
    assert "to" not in rule


def test_ingress_and_grpc_route_send_grpc_to_the_service(chart):
    objects = render_objects(chart, VALUE_SETS["ingress"])
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/backend-protocol": "GRPC"
    }
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "grpc"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "pulmoseg-ingress-tls"
    route = one(objects, "GRPCRoute")
    assert route["spec"]["parentRefs"][0]["name"] == "shared-gateway"
    assert route["spec"]["rules"] == [{"backendRefs": [{"name": FULLNAME, "port": 50051}]}]
    service = one(objects, "Service", FULLNAME)
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["appProtocol"] == "grpc"  # h2c to the pods
    with pytest.raises(Exception, match="ingress.hosts"):
        render_objects(chart, {"ingress": {"enabled": True}})
    with pytest.raises(Exception, match="grpcRoute.parentRefs"):
        render_objects(chart, {"grpcRoute": {"enabled": True}})


def test_the_dicom_port_has_a_service_of_its_own(chart):
    objects = render_objects(chart, VALUE_SETS["pacs"])
    main = one(objects, "Service", FULLNAME)
    assert "dicom" not in {p["name"] for p in main["spec"]["ports"]}
    dicom = one(objects, "Service", f"{FULLNAME}-dicom")
    spec = dicom["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["loadBalancerSourceRanges"] == ["10.20.0.0/16"]
    assert spec["externalTrafficPolicy"] == "Local"  # pacs.allowedHosts sees the PACS's IP
    assert dicom["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true"
    }
    assert spec["ports"] == [
        {"name": "dicom", "port": 11112, "targetPort": "dicom", "protocol": "TCP"}
    ]
    assert spec["selector"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    # Not without the gateway.
    without = {**VALUE_SETS["pacs"], "pacs": {"enabled": False}}
    assert len(by_kind(render_objects(chart, without), "Service")) == 1


def test_spread_priority_and_site_extras(chart):
    pod = one(render_objects(chart, PRODUCTION), "Deployment")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "pulmoseg-serving"
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "pulmoseg", "app.kubernetes.io/instance": "demo"}
    }
    objects = render_objects(chart, VALUE_SETS["extras"])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    server = pod["containers"][0]
    env = _env(server)
    assert env["HTTPS_PROXY"] == "http://proxy.hospital.example:3128"
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert server["envFrom"] == [{"configMapRef": {"name": "site-settings"}}]
    assert {"name": "site-ca", "mountPath": "/etc/ssl/site", "readOnly": True} in server[
        "volumeMounts"
    ]
    assert {"name": "site-ca", "configMap": {"name": "site-ca-bundle"}} in pod["volumes"]
    assert "priorityClassName" not in pod and "topologySpreadConstraints" not in pod


def test_helm_test_pod_checks_grpc_health_through_the_service(chart):
    plain = one(render_objects(chart), "Pod")
    assert plain["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = plain["spec"]["containers"]
    assert container["command"] == [
        "pulmoseg-healthcheck",
        "--host",
        f"{FULLNAME}.imaging.svc",
        "--port",
        "50051",
        "--timeout",
        "10",
    ]
    # Not selected by the serving Service (a test pod must not receive studies).
    selector = one(render_objects(chart), "Service")["spec"]["selector"]
    labels = plain["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items())
    tls = one(render_objects(chart, PRODUCTION), "Pod")["spec"]["containers"][0]
    assert _env(tls)["PULMOSEG_HEALTH_SERVER_NAME"] == f"{FULLNAME}.imaging.svc"
    assert "Pod" not in {o["kind"] for o in render_objects(chart, {"tests": {"enabled": False}})}


def test_each_pod_is_scraped_once_and_the_training_api_too(chart):
    values = {**VALUE_SETS["training-api"]}
    objects = render_objects(chart, values)
    selector = one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in by_kind(objects, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    # Not the headless Service (production has it): its pods would be scraped under two jobs.
    assert sorted(selected) == [FULLNAME, f"{FULLNAME}-training-api"]
    assert f"{FULLNAME}-headless" in {s["metadata"]["name"] for s in by_kind(objects, "Service")}
    api_service = one(objects, "Service", f"{FULLNAME}-training-api")
    assert {p["name"] for p in api_service["spec"]["ports"]} == {"grpc", "metrics"}


def test_training_api_labels_and_tls_name(chart):
    objects = render_objects(chart, VALUE_SETS["training-api"])
    name = f"{FULLNAME}-training-api"
    for kind in ("Deployment", "Service", "NetworkPolicy"):
        labels = one(objects, kind, name)["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "training-api", kind
    api = _server(objects, name)
    # The certificate docs/deploy.md asks for names the serving Service; the probe checks it.
    assert _env(api)["PULMOSEG_HEALTH_SERVER_NAME"] == f"{FULLNAME}.imaging.svc"


def test_the_duplicate_key_loader_refuses_what_helm_would_silently_merge(chart):
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        load_unique("metadata:\n  labels:\n    a: x\n    a: y\n")
    # Every template of every value set passes it (render_objects uses it).
    for values in VALUE_SETS.values():
        for path, text in render_text(chart, values).items():
            if path.endswith(".yaml"):
                load_unique(text)


def test_every_ci_values_file_is_a_value_set():
    files = sorted(p.name.removesuffix("-values.yaml") for p in (CHART_DIR / "ci").iterdir())
    assert files == sorted(VALUE_SETS)
    assert {"production", "pacs", "ingress", "extras", "training-api"} <= set(VALUE_SETS)


def test_the_test_pod_may_reach_a_restricted_grpc_port(chart):
    objects = render_objects(chart, PRODUCTION)  # grpcFrom: one client namespace only
    serving = one(objects, "NetworkPolicy", FULLNAME)
    grpc_rule = next(r for r in serving["spec"]["ingress"] if r["ports"][0]["port"] == "grpc")
    test_labels = one(objects, "Pod")["metadata"]["labels"]
    pod_peers = [p["podSelector"]["matchLabels"] for p in grpc_rule["from"] if "podSelector" in p]
    assert any(all(test_labels.get(k) == v for k, v in m.items()) for m in pod_peers)
    own = one(objects, "NetworkPolicy", f"{FULLNAME}-test")["spec"]
    assert all(test_labels.get(k) == v for k, v in own["podSelector"]["matchLabels"].items())
    assert own["egress"][1]["ports"] == [{"port": 50051, "protocol": "TCP"}]


def test_the_production_example_of_the_deploy_docs_renders_what_it_promises(chart):
    text = (CHART_DIR.parents[1] / "docs" / "deploy.md").read_text()
    block = text.split("cat > production.yaml <<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    (values,) = load_unique(block)
    assert values["image"]["digest"] == "sha256:<digest printed by docker push>"
    values["image"]["digest"] = "sha256:" + "0" * 64  # the one placeholder a reader fills in
    objects = render_objects(chart, values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert float(_env(pod["containers"][0])["PULMOSEG_GRACE_PERIOD_S"]) == 50
    (rule,) = _policy_rules_to_port(one(objects, "NetworkPolicy", FULLNAME), 5432)
    assert rule["to"] == [{"ipBlock": {"cidr": "10.0.12.5/32"}}]
    alert = one(objects, "PrometheusRule")["spec"]["groups"][-1]["rules"][0]
    assert alert["annotations"]["runbook_url"].startswith("https://git.example.org/")
    assert {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget"} <= {
        o["kind"] for o in objects
    }
