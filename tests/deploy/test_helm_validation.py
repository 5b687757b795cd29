"""Every rendered object against real schemas, and checkov on the render.

* Core objects: the Kubernetes OpenAPI schemas shipped in ``kubernetes-validate`` (strict: no
  unknown fields), for the chart's minimum Kubernetes version and a current one.
* Custom resources (ServiceMonitor, PrometheusRule, PyTorchJob): the upstream CRD subset in
  ``crd_schemas.py``; a PyTorchJob's pod templates are validated as real core/v1 Pods.
* ``checkov``: zero failures on the production value set; elsewhere only the justified
  entries of ``helm/checkov-skips.yaml``, each of which must still be needed.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from crd_schemas import BY_KIND
from helm_render import CHART_DIR, KUBE_VERSIONS, VALUE_SETS, render_objects, render_text

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

SKIPS_FILE = CHART_DIR.parent / "checkov-skips.yaml"
#: checkov pins old versions of packages the project needs (packaging 23), so scripts/setup.sh
#: installs it into its own environment under .venv/tools.
CHECKOV = Path(sys.prefix) / "tools" / "checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def validate_core(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def as_pod(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **template.get("metadata", {})},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_matches_its_schema(chart: Any, value_set: str, version: str) -> None:
    objects = render_objects(chart, VALUE_SETS[value_set])
    assert objects
    for obj in objects:
        crd = BY_KIND.get((obj["apiVersion"], obj["kind"]))
        if crd is None:
            validate_core(obj, version)
            continue
        jsonschema.validate(obj, crd)
        if obj["kind"] == "PyTorchJob":
            for role, spec in obj["spec"]["pytorchReplicaSpecs"].items():
                validate_core(as_pod(spec["template"], f"train-{role.lower()}"), version)


def test_validation_rejects_what_a_cluster_would_reject(chart: Any) -> None:
    deployment = next(o for o in render_objects(chart) if o["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(bad, KUBE_VERSIONS[0])
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(typo, KUBE_VERSIONS[0])
    monitor = next(
        o for o in render_objects(chart, VALUE_SETS["monitoring"]) if o["kind"] == "ServiceMonitor"
    )
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(monitor, BY_KIND[("monitoring.coreos.com/v1", "ServiceMonitor")])


def run_checkov(directory: Path) -> list[dict[str, Any]]:
    """checkov's failed checks on the manifests under ``directory`` (offline, no skips)."""
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV} (scripts/setup.sh installs it)")
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"checkov failed (rc={result.returncode}): {result.stderr[-2000:]}")
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed: list[dict[str, Any]] = []
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        failed.extend(report["results"]["failed_checks"])
    return failed


def test_checkov_passes_with_only_the_justified_skips(chart: Any, tmp_path: Path) -> None:
    for name, values in VALUE_SETS.items():
        folder = tmp_path / name
        folder.mkdir()
        for path, text in render_text(chart, values).items():
            if path.endswith(".yaml"):
                (folder / Path(path).name).write_text(text)
    failed = run_checkov(tmp_path)
    skips = {entry["id"]: entry for entry in yaml.safe_load(SKIPS_FILE.read_text())["skips"]}
    for entry in skips.values():
        assert len(entry["reason"]) > 80, f"{entry['id']} needs a real justification"
    findings = [(f["check_id"], Path(f["file_path"]).parts[1], f["resource"]) for f in failed]
    production = [f for f in findings if f[1] == "production"]
    assert production == [], f"the production render must pass every check: {production}"
    unjustified = [f for f in findings if f[0] not in skips]
    assert unjustified == [], f"checkov failures without a justified skip: {unjustified}"
    # Every skip is still needed (and proves checkov really ran the checks).
    assert {f[0] for f in findings} == set(skips)
