"""Helpers for tests that run the real Prometheus binaries (Debian package ``prometheus``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "helm" / "pulmoseg" / "files" / "prometheus-rules.yaml"
DASHBOARD = REPO / "helm" / "pulmoseg" / "files" / "grafana-dashboard.json"


#: Two releases scraped by one Prometheus (namespace, job): the promtool tests load the rules of
#: both, as two PrometheusRules would, and feed series of both.
RELEASE_A = ("clinic-a", "pulmoseg")
RELEASE_B = ("clinic-b", "pulmoseg-canary")
RUNBOOK = "https://example.org/docs/runbook.md"


def scoped_rules(namespace: str, job: str, runbook_url: str = RUNBOOK) -> str:
    """The rule file with its placeholders filled, as templates/prometheusrule.yaml does."""
    return (
        RULES.read_text()
        .replace("__NAMESPACE__", namespace)
        .replace("__JOB__", job)
        .replace("__RUNBOOK_URL__", runbook_url)
    )


def require_binary(name: str) -> str:
    """The binary's path; a missing one fails the test with the way to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"'{name}' is not installed: run scripts/setup.sh (Debian package prometheus)",
            pytrace=False,
        )
    return path


_METRIC = re.compile(r"\b((?:pulmoseg|process)_[a-z0-9_]+)\b")


def metric_names(expression: str) -> set[str]:
    """Metric names an expression selects (recording-rule names, with ':', are not metrics)."""
    return {m for m in _METRIC.findall(expression) if not m.endswith("_")}


def exposed_names(exposition: str) -> set[str]:
    """Every sample name a /metrics text can carry, from its ``# TYPE`` lines.

    Labelled histograms without observations still announce their family, so this works on a
    server that has not seen a study yet.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(maxsplit=3)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names |= {name if name.endswith("_total") else f"{name}_total"}
        else:
            names.add(name)
    return names
