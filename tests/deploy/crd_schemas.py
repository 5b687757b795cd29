"""JSON schemas for the custom resources the chart renders, which kubernetes-validate lacks.

They are the subset of the upstream CRDs (prometheus-operator v0.7x ``monitoring.coreos.com/v1``
and Kubeflow training-operator ``kubeflow.org/v1``) that the chart uses, with unknown fields
rejected, so a misspelt field fails here instead of being pruned by the API server. The pod
templates inside a PyTorchJob are validated separately as real core/v1 Pods.
"""

from __future__ import annotations

from typing import Any

_DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _LABELS, "matchExpressions": {"type": "array"}},
}

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": _SELECTOR,
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            "jobLabel": {"type": "string"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        "scheme": {"enum": ["http", "https"]},
                    },
                },
            },
        },
    },
)

_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _LABELS,
        "annotations": _LABELS,
    },
}

PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "limit": {"type": "integer"},
                        "rules": {"type": "array", "items": _RULE},
                    },
                },
            }
        },
    },
)

_REPLICA_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template"],
    "properties": {
        "replicas": {"type": "integer", "minimum": 0},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": {"type": "object"},
    },
}

PYTORCH_JOB = _resource(
    "kubeflow.org/v1",
    "PyTorchJob",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["pytorchReplicaSpecs"],
        "properties": {
            # *string in the v1 API (e.g. "4", "auto", "gpu").
            "nprocPerNode": {"type": "string"},
            "elasticPolicy": {"type": "object"},
            "runPolicy": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "cleanPodPolicy": {"enum": ["All", "Running", "None"]},
                    "ttlSecondsAfterFinished": {"type": "integer"},
                    "activeDeadlineSeconds": {"type": "integer"},
                    "suspend": {"type": "boolean"},
                },
            },
            "pytorchReplicaSpecs": {
                "type": "object",
                "additionalProperties": False,
                "required": ["Master"],
                "properties": {"Master": _REPLICA_SPEC, "Worker": _REPLICA_SPEC},
            },
        },
    },
)

BY_KIND: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("kubeflow.org/v1", "PyTorchJob"): PYTORCH_JOB,
}
