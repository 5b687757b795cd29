"""The study outcome ↔ ``pulmoseg.v1`` messages, driven by the two field tables.

The schema (``service.core.study_outcome``) and the proto use the same field names, so one walker
maps any outcome model to its message and back: scalars are assigned, maps and repeated fields
copied, sub-models recursed, None left unset. Reading back, an unset message or optional scalar
is None, and an empty string is None where the schema allows None (proto3 strings have no
presence). A field the message lacks raises ``KeyError`` in ``to_message``; ``partial=True``
renders a view (the records message carries a subset of the summary).
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel

from service.core.study_outcome import outcome_submodel

__all__ = ["from_message", "to_message"]

M = TypeVar("M", bound=Message)
B = TypeVar("B", bound=BaseModel)


def to_message(model: BaseModel, message_type: type[M], *, partial: bool = False) -> M:
    """``model`` as a ``message_type`` message (computed fields included)."""
    message = message_type()
    _fill(message, model, partial)
    return message


def from_message(message: Message, model_type: type[B]) -> B:
    """The ``model_type`` read back from ``message`` (computed fields are derived again)."""
    return model_type.model_validate(_values(message, model_type))


def _field_names(model: BaseModel) -> list[str]:
    return [*type(model).model_fields, *type(model).model_computed_fields]


def _fill(message: Message, model: BaseModel, partial: bool) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for name in _field_names(model):
        if name not in fields:
            if partial:
                continue
            raise KeyError(f"{type(message).__name__} has no field {name!r} of {type(model)}")
        value = getattr(model, name)
        if value is None:
            continue
        descriptor = fields[name]
        target = getattr(message, name)
        if isinstance(value, BaseModel):
            target.SetInParent()
            _fill(target, value, partial)
        elif (
            descriptor.is_repeated
            and descriptor.message_type is not None
            and not _is_map(descriptor)
        ):
            for item in value:  # repeated sub-models
                _fill(target.add(), item, partial)
        elif _is_map(descriptor):
            target.update({k: _scalar(v) for k, v in value.items()})
        elif descriptor.is_repeated:
            target.extend(_scalar(v) for v in value)
        else:
            setattr(message, name, _scalar(value))


def _values(message: Message, model_type: type[BaseModel]) -> dict[str, Any]:
    fields = message.DESCRIPTOR.fields_by_name
    values: dict[str, Any] = {}
    for name, info in model_type.model_fields.items():
        descriptor = fields.get(name)
        if descriptor is None:
            continue  # a partial view: the schema's default stands
        nested = outcome_submodel(info.annotation)
        if nested is not None and descriptor.is_repeated:
            values[name] = [_values(item, nested) for item in getattr(message, name)]
        elif nested is not None:
            values[name] = (
                _values(getattr(message, name), nested) if message.HasField(name) else None
            )
        elif _is_map(descriptor):
            values[name] = dict(getattr(message, name))
        elif descriptor.is_repeated:
            values[name] = list(getattr(message, name))
        elif descriptor.has_presence and not message.HasField(name):
            values[name] = None
        else:
            value = getattr(message, name)
            values[name] = None if value == "" and _allows_none(info.annotation) else value
    return values


def _is_map(descriptor: FieldDescriptor) -> bool:
    entry = descriptor.message_type
    return entry is not None and entry.GetOptions().map_entry


def _allows_none(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return isinstance(annotation, types.UnionType) and type(None) in annotation.__args__


def _scalar(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
