"""Typed settings machinery shared by the service settings and the training config.

Both sides declare their fields on a :class:`SettingsModel` (pydantic v2) and resolve values
from layers (defaults < YAML file < environment < explicit overrides) with
:meth:`SettingsModel.from_layers`. What users see is made here, once: unknown keys get a
"did you mean ..." hint, and every bad value ends in one sentence that names the key, the
value, what was expected and where the value came from. Wrong types raise ``TypeError``, bad
values ``ValueError`` (pydantic's own ``ValidationError`` never reaches the user).
"""

from __future__ import annotations

import difflib
import reprlib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = [
    "Layer",
    "SettingsModel",
    "check_choice",
    "did_you_mean",
    "env_layers",
    "is_optional",
    "read_yaml_mapping",
    "settings_error",
]


class Layer(NamedTuple):
    """Values from one source; ``source`` completes "(from ...)" in error messages."""

    source: str
    values: Mapping[str, Any]


#: pydantic error types that mean "wrong type" (TypeError), with what was expected.
_EXPECTED: dict[str, str] = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "path_type": "a file path",
}
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def did_you_mean(
    word: object, choices: Iterable[str], prefix: str = "", *, ignore_case: bool = False
) -> str:
    """`` Did you mean '<prefix>x'?`` for the closest choice, or an empty string.

    With ``ignore_case`` the comparison is case-blind ("binray" finds 'BINARY') and the hint
    names the choice as it is spelled, so case-insensitive options share this one helper.
    """
    options = list(choices)
    if not ignore_case:
        close = difflib.get_close_matches(str(word), options, n=1)
        return f" Did you mean '{prefix}{close[0]}'?" if close else ""
    folded = {option.casefold(): option for option in options}
    close = difflib.get_close_matches(str(word).casefold(), list(folded), n=1)
    return f" Did you mean '{prefix}{folded[close[0]]}'?" if close else ""


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming ``what`` (e.g.
    "Setting 'log_level'") with a did-you-mean hint."""
    options = [str(c) for c in choices]
    if value not in options:
        listed = ", ".join(f"'{c}'" for c in options)
        raise ValueError(
            f"{what} must be one of {listed}, got {value!r}.{did_you_mean(value, options)}"
        )
    return value


def read_yaml_mapping(path: str | Path, what: str = "Settings file") -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: ``{}``), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ValueError(f"{what} '{path}' is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{what} '{path}' must hold a mapping of names to values at the top level, "
            f"got {type(data).__name__}."
        )
    return data


def env_layers(model: type[BaseModel], env: Mapping[str, str], prefix: str) -> list[Layer]:
    """One layer per ``<prefix><FIELD>`` variable set in ``env``, so errors name the variable.

    Other variables with the prefix are ignored: they may belong to other components.
    """
    layers = []
    for name in model.model_fields:
        variable = prefix + name.upper()
        if variable in env:
            layers.append(Layer(f"environment variable {variable}", {name: env[variable]}))
    return layers


class SettingsModel(BaseModel):
    """A typed settings section: validated on construction and on assignment, with one-line
    errors in the project's wording instead of pydantic's multi-line report."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        # YAML turns `version: 1.0` into a float; a string field should take it as written.
        coerce_numbers_to_str=True,
        protected_namespaces=(),
    )

    #: How messages name a key: "Setting 'port' ..." or "Config key 'tcsm.lr' ...".
    noun: ClassVar[str] = "Setting"
    #: Dotted path of this section inside its parent (e.g. "data."), for messages about it.
    key_prefix: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise settings_error(exc, type(self)) from None

    # Validation of nested sections and model_validate() skip this wrapper (as they skip
    # BaseModel.__init__; pydantic's RootModel does the same), so errors are translated once,
    # at the top, where the key's full path and source are known.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        if not name.startswith("_") and name not in cls.model_fields:
            raise AttributeError(
                f"{cls.noun} '{cls.key_prefix}{name}' does not exist."
                f"{did_you_mean(name, cls.model_fields, prefix=cls.key_prefix)}"
            )
        if cls.model_config.get("frozen"):
            raise AttributeError(
                f"{cls.__name__} is read-only; use with_overrides({name}=...) for a changed copy."
            )
        before = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            # pydantic has already stored the value when a cross-field check fails: undo it.
            self.__dict__[name] = before
            raise settings_error(exc, cls, default_source="assignment") from None

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes True as 1; `epochs: yes` in YAML is a mistake, not one epoch.
        annotation = cls.model_fields[info.field_name or ""].annotation
        if isinstance(value, bool) and annotation in (int, float):
            kind = "int_type" if annotation is int else "float_type"
            raise PydanticCustomError(kind, "Input should be a number, not a boolean")
        return value

    @classmethod
    def from_layers(cls, *layers: Layer) -> Self:
        """Merge layers (later wins; nested mappings merge key by key) and validate once."""
        merged: dict[str, Any] = {}
        origins: dict[tuple[Any, ...], str] = {}
        for layer in layers:
            if not isinstance(layer.values, Mapping):
                where = f" in {layer.source}" if layer.source else ""
                raise TypeError(
                    f"{cls.noun} values{where} must be a mapping of names to values, "
                    f"got {type(layer.values).__name__}."
                )
            _merge(merged, layer.values, layer.source, (), origins)
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise settings_error(exc, cls, origins) from None

    @classmethod
    def resolve(
        cls,
        yaml_path: str | Path | None,
        env: Mapping[str, str],
        env_prefix: str,
        overrides: Mapping[str, Any],
    ) -> Self:
        """The 12-factor precedence in one place: defaults < YAML file < environment < overrides."""
        layers: list[Layer] = []
        if yaml_path is not None:
            path = Path(yaml_path)
            layers.append(
                Layer(f"settings file '{path}'", read_yaml_mapping(path, "Settings file"))
            )
        layers += env_layers(cls, env, env_prefix)
        layers.append(Layer("keyword overrides", overrides))
        return cls.from_layers(*layers)

    def with_overrides(self, **overrides: Any) -> Self:
        """A copy with some fields replaced, converted and checked like any other value."""
        return type(self).from_layers(
            Layer("current settings", self.model_dump()), Layer("keyword overrides", overrides)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the resolved values (``from_layers`` takes it back)."""
        return self.model_dump()


def _merge(
    into: dict[str, Any],
    values: Mapping[str, Any],
    source: str,
    path: tuple[Any, ...],
    origins: dict[tuple[Any, ...], str],
) -> None:
    """Deep-merge ``values`` into ``into`` (never mutating ``values``), noting each key's source."""
    for key, value in values.items():
        where = (*path, key)
        origins[where] = source
        if isinstance(value, Mapping):
            current = into.get(key)
            into[key] = dict(current) if isinstance(current, Mapping) else {}
            _merge(into[key], value, source, where, origins)
        else:
            into[key] = value


def settings_error(
    exc: ValidationError,
    model: type[SettingsModel],
    origins: Mapping[tuple[Any, ...], str] | None = None,
    default_source: str = "",
) -> TypeError | ValueError:
    """One exception for a pydantic report: unknown keys first, then the rest in order."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    described = [_describe(e, model, origins or {}, default_source) for e in errors]
    messages = list(dict.fromkeys(message for _, message in described))  # one per problem
    return described[0][0](" ".join(messages))


def _describe(
    error: ErrorDetails,
    model: type[SettingsModel],
    origins: Mapping[tuple[Any, ...], str],
    default_source: str,
) -> tuple[type[TypeError] | type[ValueError], str]:
    loc = tuple(error["loc"])
    key = _dotted(model.key_prefix, loc)
    source = next((origins[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origins), "")
    source = source or default_source
    value = _SHORT.repr(error.get("input"))
    kind = error["type"]
    noun = model.noun
    if kind == "extra_forbidden":
        known = list(_section(model, loc[:-1]).model_fields)
        parent = _dotted(model.key_prefix, loc[:-1])
        where = f" in {source}" if source else ""
        hint = did_you_mean(loc[-1], known, prefix=f"{parent}." if parent else "")
        section = f" of '{parent}'" if parent else ""
        return ValueError, (
            f"Unknown {noun.lower()} '{key}'{where}.{hint} "
            f"Known {noun.lower()}s{section}: {', '.join(known)}."
        )
    suffix = f" (from {source})." if source else "."
    if kind in _EXPECTED:
        return TypeError, f"{noun} '{key}' must be {_EXPECTED[kind]}, got {value}{suffix}"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        if source and loc:
            end = "." if message.endswith(".") else ""
            message = f"{message.removesuffix('.')} (from {source}){end}"
        return ValueError, message
    if kind == "too_long" or (kind == "missing" and loc and isinstance(loc[-1], int)):
        path = loc if kind == "too_long" else loc[:-1]
        given = error.get("input")
        count = len(given) if isinstance(given, list | tuple) else "another number of"
        items = len(typing.get_args(_field_annotation(model, path)))
        return ValueError, (
            f"{noun} '{_dotted(model.key_prefix, path)}' must have {items} items, "
            f"got {count}{suffix}"
        )
    return ValueError, f"{noun} '{key}' is invalid: {error['msg']}, got {value}{suffix}"


def _dotted(prefix: str, loc: tuple[Any, ...]) -> str:
    """('model', 'features', 2) -> 'model.features[2]'."""
    out = prefix.rstrip(".")
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _field_annotation(model: type[BaseModel], path: tuple[Any, ...]) -> Any:
    """The annotation of the field at ``path`` (e.g. ('model', 'features'))."""
    field = _section(model, path[:-1]).model_fields.get(path[-1]) if path else None
    return field.annotation if field is not None else None


def _section(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel]:
    """The nested model class found by following ``path`` through the fields of ``model``."""
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model


def is_optional(annotation: Any) -> bool:
    """True for ``X | None`` annotations (a blank environment value clears those)."""
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)
