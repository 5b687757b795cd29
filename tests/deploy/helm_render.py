"""Rendering the Helm chart for tests: Helm's own Go library (helm-python-sdk), no cluster.

The named value sets are the configurations a platform team would install; every test that
checks "all renders" goes through :data:`VALUE_SETS`, so a new template is checked by all of
them as soon as one set enables it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "pulmoseg"
RELEASE = "demo"
NAMESPACE = "imaging"
#: The chart's minimum Kubernetes version (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.27.0", "1.33.0")
DIGEST = "sha256:" + "ab" * 32

#: Production-like settings: pinned digest, GPU, TLS + token from Secrets, 3 replicas sharing
#: one quality database.
PRODUCTION: dict[str, Any] = {
    "replicaCount": 3,
    "image": {"digest": DIGEST, "pullPolicy": "Always"},
    "gpu": {"enabled": True, "runtimeClassName": "nvidia"},
    "strategy": {"maxSurge": 0, "maxUnavailable": 1},
    "tls": {"enabled": True, "existingSecret": "pulmoseg-tls", "clientCA": True},
    "auth": {"existingSecret": "pulmoseg-token"},
    "quality": {"database": {"existingSecret": "pulmoseg-quality-db"}},
    "service": {"headless": {"enabled": True}},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": {"gpu": {"enabled": True, "count": 2}},
    "production": PRODUCTION,
    # The PACS gateway sidecar with a persistent spool, an allow-list and the server's token.
    "pacs": {
        "pacs": {
            "enabled": True,
            "aeTitle": "LUNGSEG",
            "destinations": ["ORTHANC@pacs.hospital.local:4242", "ARCHIVE@10.0.0.7:104"],
            "allowedCallingAets": ["ORTHANC"],
            "spool": {"existingClaim": "pulmoseg-spool"},
        },
        "auth": {"existingSecret": "pulmoseg-token"},
    },
    # Monitoring objects, with the gateway (emptyDir spool, STOW-RS only) scraped as well.
    "monitoring": {
        "pacs": {"enabled": True, "stowUrl": "https://pacs.hospital.local/dicom-web"},
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        },
    },
    "autoscaling": {
        "autoscaling": {
            "enabled": True,
            "studiesInProgress": {"metricName": "pulmoseg_studies_in_progress"},
        }
    },
    # One replica keeping its quality records in SQLite on a PVC across restarts.
    "quality-sqlite": {"quality": {"persistence": {"existingClaim": "pulmoseg-quality"}}},
    "model-url": {
        "model": {
            "source": "url",
            "url": "https://models.example.org/lung/v3.onnx",
            "sha256": "0" * 64,
        }
    },
    "model-image": {
        "model": {
            "source": "image",
            "image": {"repository": "registry.example.org/lung-model", "tag": "v3"},
        }
    },
    "training-pytorchjob": {"training": {"enabled": True, "kind": "PyTorchJob", "nodes": 3}},
    "training-indexed": {
        "training": {"enabled": True, "kind": "IndexedJob", "nodes": 2, "procsPerNode": 4}
    },
    # The training API pod beside production serving replicas that poll the model folder.
    "training-api": {
        **PRODUCTION,
        "training": {"image": {"digest": DIGEST, "pullPolicy": "Always"}},
        "trainingApi": {"enabled": True, "gpus": 1, "dataClaim": "pulmoseg-data"},
        "model": {"file": "versions"},
        "config": {"model_poll_s": 30},
    },
}


def render_text(chart: Any, values: dict[str, Any] | None = None) -> dict[str, str]:
    """Rendered templates by path, as `helm template` would print them."""
    rendered: dict[str, str] = chart.render(values or None, name=RELEASE, namespace=NAMESPACE)
    return rendered


def render_objects(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object of one render, in template order."""
    objects: list[dict[str, Any]] = []
    for path, text in render_text(chart, values).items():
        if path.endswith((".yaml", ".yml")):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of ``kind`` (and ``name``); fails the test if there is not exactly one."""
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
