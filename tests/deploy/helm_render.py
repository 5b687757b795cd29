"""Rendering the Helm chart for tests: Helm's own Go library (helm-python-sdk), no cluster.

The named value sets are the chart's ci/*.yaml files, the configurations a platform team would
install; every test that checks "all renders" goes through :data:`VALUE_SETS`, so a new template
is checked by all of them as soon as one set enables it. Every rendered document is read with a
loader that refuses duplicate keys.
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

#: The chart's ci/<name>-values.yaml files (chart-testing's convention): the configurations a
#: platform team would install, rendered and validated by the tests under their names.
CI_DIR = CHART_DIR / "ci"


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML forbids duplicate keys; Helm keeps the last one silently, this loader refuses."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_unique(text: str) -> list[Any]:
    """Every document of ``text``, refusing duplicate keys at any depth."""
    return list(yaml.load_all(text, Loader=UniqueKeyLoader))


def _value_sets() -> dict[str, dict[str, Any]]:
    sets = {}
    for path in sorted(CI_DIR.glob("*-values.yaml")):
        (values,) = load_unique(path.read_text())
        sets[path.name.removesuffix("-values.yaml")] = values or {}
    return sets


VALUE_SETS: dict[str, dict[str, Any]] = _value_sets()
#: Production-like settings (docs/deploy.md): pinned digest, GPU, TLS + token from Secrets,
#: 3 replicas sharing one PostgreSQL records database, database egress only, zone spread.
PRODUCTION: dict[str, Any] = VALUE_SETS["production"]


def render_text(chart: Any, values: dict[str, Any] | None = None) -> dict[str, str]:
    """Rendered templates by path, as `helm template` would print them."""
    rendered: dict[str, str] = chart.render(values or None, name=RELEASE, namespace=NAMESPACE)
    return rendered


def render_objects(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object of one render, in template order."""
    objects: list[dict[str, Any]] = []
    for path, text in render_text(chart, values).items():
        if path.endswith((".yaml", ".yml")):
            objects.extend(doc for doc in load_unique(text) if doc)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of ``kind`` (and ``name``); fails the test if there is not exactly one."""
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
