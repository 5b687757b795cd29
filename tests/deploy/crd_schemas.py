"""JSON schemas for the custom resources the chart renders, which kubernetes-validate lacks.

They are the subset of the upstream CRDs (prometheus-operator v0.7x ``monitoring.coreos.com/v1``,
Kubeflow training-operator ``kubeflow.org/v1``, Gateway API ``gateway.networking.k8s.io/v1``)
that the chart uses, with unknown fields rejected, so a misspelt field fails here instead of
being pruned by the API server. The pod templates inside a PyTorchJob are validated separately
as real core/v1 Pods.
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

_GATEWAY_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_PARENT_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "group": {"type": "string"},
        "kind": {"type": "string"},
        "namespace": {"type": "string"},
        "name": _GATEWAY_NAME,
        "sectionName": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    },
}
_BACKEND_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "group": {"type": "string"},
        "kind": {"type": "string"},
        "name": _GATEWAY_NAME,
        "namespace": {"type": "string"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "weight": {"type": "integer", "minimum": 0},
    },
}
#: Gateway API v1 (standard channel) GRPCRoute, the fields the chart uses.
GRPC_ROUTE = _resource(
    "gateway.networking.k8s.io/v1",
    "GRPCRoute",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "parentRefs": {"type": "array", "maxItems": 32, "items": _PARENT_REF},
            "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string"}},
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matches": {"type": "array"},
                        "filters": {"type": "array"},
                        "backendRefs": {"type": "array", "items": _BACKEND_REF},
                    },
                },
            },
        },
    },
)

BY_KIND: dict[tuple[str, str], dict[str, Any]] = {
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): GRPC_ROUTE,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("kubeflow.org/v1", "PyTorchJob"): PYTORCH_JOB,
}
