"""The study outcome schema reaches every outlet, field by field, with nothing mapped by hand.

Each test builds an outcome in which *every* field holds a non-default value (generated from
the schema, so a new field is covered without editing this file) and checks one outlet: the
gRPC ``StudySummary`` both ways, ``summary.json``, the records row, the client's dictionary and
the metrics declared on the fields. The last test adds a field to a copy of the schema and of
the proto, and shows that the walker carries it with no other change.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from service.core.study_outcome import (
    CountedBy,
    Metric,
    StudyOutcome,
    declared_metrics,
    outcome_submodel,
    summary_document,
    write_summary_json,
)
from service.grpc_api import segmentation_pb2 as pb2
from service.grpc_api.outcome_messages import from_message, to_message
from service.observability.quality_metrics import QualityMetrics
from service.quality.geometry import StudyGeometry
from service.quality.records import QualityStore, StudyRecord


def _value(annotation: Any, seed: int) -> Any:
    """A non-default value of ``annotation`` (distinct per ``seed``)."""
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in annotation.__args__ if a is not type(None))
    origin = typing.get_origin(annotation)
    nested = outcome_submodel(annotation)
    if nested is not None and origin is not list:
        return _full(nested, seed)
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        return {f"k{seed}": _value(value_type, seed + 1), f"m{seed}": _value(value_type, seed + 2)}
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        return [_value(item_type, seed), _value(item_type, seed + 1)]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return list(annotation)[seed % len(annotation)]
    if annotation is bool:
        return True
    if annotation is int:
        return 1000 + seed
    if annotation is float:
        return 0.25 + seed / 64
    if annotation is str:
        return f"text-{seed}"
    raise TypeError(f"no generator for {annotation!r}")


def _full(model: type[BaseModel], seed: int = 1) -> Any:
    values = {
        name: _value(info.annotation, seed + i)
        for i, (name, info) in enumerate(model.model_fields.items())
    }
    return model.model_validate(values)


def _paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        names.add(prefix + name)
        nested = outcome_submodel(info.annotation)
        if nested is not None:
            names |= _paths(nested, f"{prefix}{name}.")
    return names | {prefix + name for name in model.model_computed_fields}


def _proto_paths(descriptor: Any, prefix: str = "") -> set[str]:
    names = set()
    for field in descriptor.fields:
        names.add(prefix + field.name)
        entry = field.message_type
        if entry is not None and not entry.GetOptions().map_entry:
            names |= _proto_paths(entry, f"{prefix}{field.name}.")
    return names


FULL = _full(StudyOutcome)


def test_the_schema_and_the_proto_name_the_same_fields():
    assert _paths(StudyOutcome) == _proto_paths(pb2.StudySummary.DESCRIPTOR)


def test_every_field_survives_the_proto_both_ways():
    message = to_message(FULL, pb2.StudySummary)
    for path in _paths(StudyOutcome):  # every field is set in the message
        owner: Any = message
        *parents, leaf = path.split(".")
        for name in parents:
            owner = getattr(owner, name)
            if not hasattr(owner, "DESCRIPTOR"):  # a repeated sub-message: look at the first
                owner = owner[0]
        value = getattr(owner, leaf)
        assert value or value is True, path
    assert from_message(message, StudyOutcome) == FULL


def test_an_outcome_with_nothing_optional_round_trips_as_none():
    bare = StudyOutcome(study_uid_hash="ab")
    back = from_message(to_message(bare, pb2.StudySummary), StudyOutcome)
    assert back == bare and back.clinical is None and back.quality is None


def test_summary_json_holds_every_field_in_schema_order(tmp_path):
    path = write_summary_json(tmp_path / "s.json", FULL)
    document = json.loads(path.read_text())
    assert list(document) == [*StudyOutcome.model_fields, "review_required", "skipped"]
    assert (
        StudyOutcome.model_validate({k: v for k, v in document.items() if k != "skipped"}) == FULL
    )
    assert summary_document(FULL) == {**FULL.as_dict(), "skipped": []}


def test_the_records_row_holds_every_field():
    geometry = StudyGeometry(
        (2, 2, 2), (1.0, 1.0, 1.0), (0.0,) * 3, (1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0), "f"
    )
    store = QualityStore("sqlite://")
    try:
        record = StudyRecord(FULL.study_uid_hash, datetime.now(UTC), FULL)
        store.save_study(record, np.zeros(geometry.shape, np.uint8), geometry)
        assert store.get(FULL.study_uid_hash).outcome == FULL
        flagged, _ = store.list(flagged_only=True)
        assert [r.study_hash for r in flagged] == [FULL.study_uid_hash]
    finally:
        store.close()


def test_the_client_dictionary_is_the_outcome():
    from service.client.client import ClientResult

    result = ClientResult(
        seg_bytes=b"", outcome=from_message(to_message(FULL, pb2.StudySummary), StudyOutcome)
    )
    assert result.summary == FULL.as_dict()
    assert result.summary["clinical"]["involvement_percent"] == FULL.clinical.involvement_percent


def test_fields_that_declare_a_metric_are_exported():
    registry = CollectorRegistry()
    metrics = QualityMetrics(registry)
    declared = dict(declared_metrics())
    assert declared, "no field declares a metric"
    metrics.observe_outcome(FULL, ("k1",), ["consistency"])
    version = FULL.model_version
    for path, spec in declared.items():
        value: Any = FULL
        for name in path:
            value = getattr(value, name)
        if isinstance(spec, Metric):
            total = registry.get_sample_value(f"{spec.name}_sum", {"model_version": version})
            assert total == pytest.approx(float(value) * spec.scale), path
        else:
            assert isinstance(spec, CountedBy)
            labels = {spec.label: str(getattr(value, "value", value)), "model_version": version}
            assert registry.get_sample_value(spec.name, labels) == 1.0, path


def _extended_summary_type() -> type:
    """``StudySummary`` of the real proto plus one field, built in a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    dependency = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(dependency)
    pool.Add(dependency)
    file_proto = descriptor_pb2.FileDescriptorProto()
    pb2.DESCRIPTOR.CopyToProto(file_proto)
    summary = next(m for m in file_proto.message_type if m.name == "StudySummary")
    summary.field.add(
        name="dummy_density_ml",
        number=99,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pulmoseg.v1.StudySummary"))


def test_a_new_field_needs_the_schema_and_the_proto_only(tmp_path):
    class ExtendedOutcome(StudyOutcome):
        dummy_density_ml: float | None = None

    extended = ExtendedOutcome(
        **FULL.model_dump(exclude={"review_required"}), dummy_density_ml=42.5
    )
    message = to_message(extended, _extended_summary_type())
    assert message.dummy_density_ml == 42.5
    assert from_message(message, ExtendedOutcome) == extended
    document = json.loads(write_summary_json(tmp_path / "s.json", extended).read_text())
    assert document["dummy_density_ml"] == 42.5
    with pytest.raises(KeyError, match="has no field 'dummy_density_ml'"):
        to_message(extended, pb2.StudySummary)  # a schema field the proto lacks is an error
