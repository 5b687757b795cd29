"""The chart's server settings (`config:` in values.yaml and values.schema.json) follow the
settings model (service/serving/settings.py) group by group, so the two cannot drift apart.

Every setting is either offered by the schema, with a type, choices and bounds the server
agrees with, or set by the chart itself (listed below with the reason); nothing else.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import pytest
import yaml
from helm_render import CHART_DIR, VALUE_SETS, render_objects

from service.core.options import Option
from service.core.settings_base import SettingsModel, leaf_paths
from service.observability.logging_config import LOG_LEVELS
from service.serving.settings import ServiceSettings, load_settings

#: Settings (or whole groups) the chart sets from its own values, not from `config:`.
SET_BY_THE_CHART: dict[str, str] = {
    "model_path": "--model, from model.*",
    "host": "--host 0.0.0.0",
    "port": "--port, containerPorts.grpc",
    "auth_token": "auth.existingSecret (a file, never in the pod spec)",
    "tls": "tls.existingSecret and tls.clientCA",
    "metrics.host": "--metrics-host 0.0.0.0",
    "metrics.port": "--metrics-port, containerPorts.metrics",
    "records": "quality.persistence or quality.database.existingSecret",
    "capture": "no capture volume in the serving pod",
    "training.enabled": "the trainingApi deployment",
    "training.dir": "the trainingApi deployment (its work volume)",
    "training.max_queued": "trainingApi.maxQueued",
    "training.max_running": "trainingApi.maxRunning",
    "training.data_root": "the trainingApi deployment (its data volume)",
    "training.promote_token": "a Secret, mounted as a file",
}
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def config_schema() -> dict[str, Any]:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    return schema["properties"]["config"]


def schema_leaves(node: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The schema's settings by dotted name (groups are objects with properties)."""
    if node.get("type") == "object" and "properties" in node:
        assert node.get("additionalProperties") is False, f"'{'.'.join(path)}' must be closed"
        leaves: dict[str, dict[str, Any]] = {}
        for name, child in node["properties"].items():
            leaves |= schema_leaves(child, (*path, name))
        return leaves
    return {".".join(path): node}


def model_field(path: str) -> Any:
    model: type[SettingsModel] = ServiceSettings
    *groups, name = path.split(".")
    for group in groups:
        annotation = model.model_fields[group].annotation
        assert isinstance(annotation, type) and issubclass(annotation, SettingsModel), path
        model = annotation
    return model.model_fields[name]


def chart_set(path: str) -> bool:
    return any(path == name or path.startswith(f"{name}.") for name in SET_BY_THE_CHART)


def test_every_setting_is_in_the_schema_or_set_by_the_chart() -> None:
    offered = set(schema_leaves(config_schema()))
    settings = {".".join(path) for path in leaf_paths(ServiceSettings)}
    assert offered <= settings, f"the schema offers what the server lacks: {offered - settings}"
    both = {path for path in offered if chart_set(path)}
    assert not both, f"offered by the schema and set by the chart: {both}"
    missing = {path for path in settings - offered if not chart_set(path)}
    assert not missing, f"settings neither in values.schema.json nor set by the chart: {missing}"
    gone = {
        name
        for name in SET_BY_THE_CHART
        if not any(p == name or p.startswith(f"{name}.") for p in settings)
    }
    assert not gone, f"SET_BY_THE_CHART names settings that are gone: {gone}"


@pytest.mark.parametrize("path", sorted(schema_leaves(config_schema())))
def test_schema_types_and_choices_match_the_model(path: str) -> None:
    node = schema_leaves(config_schema())[path]
    annotation = model_field(path).annotation
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    base = (
        next(a for a in typing.get_args(annotation) if a is not type(None))
        if optional
        else annotation
    )
    if typing.get_origin(base) is typing.Annotated:  # e.g. Fraction | None
        base = typing.get_args(base)[0]
    kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
    assert ("null" in kinds) == optional, f"'{path}': null allowed iff the setting is optional"
    if isinstance(base, type) and issubclass(base, Option):
        assert kinds == ["string"] and node["enum"] == [member.value for member in base]
    elif path == "log.level":
        assert sorted(node["enum"]) == sorted(LOG_LEVELS)
    else:
        assert [k for k in kinds if k != "null"] == [_JSON_TYPES[base]], path


@pytest.mark.parametrize(
    ("path", "bound"),
    [
        (path, key)
        for path, node in schema_leaves(config_schema()).items()
        for key in ("minimum", "exclusiveMinimum", "maximum")
        if key in node
    ],
)
def test_values_the_schema_refuses_the_server_refuses_too(path: str, bound: str) -> None:
    node = schema_leaves(config_schema())[path]
    limit = node[bound]
    step = 1 if "integer" in node["type"] else 0.5
    outside = {"minimum": limit - step, "exclusiveMinimum": limit, "maximum": limit + step}[bound]
    value: Any = outside
    for part in reversed(path.split(".")):
        value = {part: value}
    with pytest.raises(ValueError, match=f"'{path}'"):
        load_settings(env={}, **value)


def test_the_chart_defaults_are_accepted_and_reach_the_pacs_sidecar(chart: Any) -> None:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["config"]
    settings = load_settings(env={}, **defaults)
    assert settings.log.format == "json" and settings.limits.max_workers == 8
    objects = render_objects(chart, VALUE_SETS["pacs"])
    (pod,) = [o for o in objects if o["kind"] == "Deployment"]
    (sidecar,) = [c for c in pod["spec"]["template"]["spec"]["containers"] if c["name"] == "pacs"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["PULMOSEG_PACS_LOG_FORMAT"] == "json"  # the server's log.format


@pytest.fixture(scope="module")
def chart() -> Any:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded
