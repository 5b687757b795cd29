"""Typed settings machinery shared by the service settings and the training config.

Both sides declare their fields on a :class:`SettingsModel` (pydantic v2) and resolve values
from layers (defaults < YAML file < environment < explicit overrides) with
:meth:`SettingsModel.from_layers`. What users see is made here, once: unknown keys get a
"did you mean ..." hint, and every bad value ends in one sentence that names the key, the
value, what was expected and where the value came from. Wrong types raise ``TypeError``, bad
values ``ValueError`` (pydantic's own ``ValidationError`` never reaches the user).

Settings of a process (:class:`EnvSettingsModel`) come in groups (``capture.dir``), read from
text: the environment names a field ``<PREFIX><GROUP>__<FIELD>`` or by the flat name it had
before the groups (``PULMOSEG_CAPTURE_DIR``); the flat names also stay valid YAML keys and
overrides, through one table per model (:attr:`SettingsModel.flat_names`). The range checks
every group needs are the annotated types below (:data:`Port`, :data:`Positive`, ...), so a
bad value is reported the same way in every group: "Setting 'capture.max_studies' must be
>= 1, got 0 (from ...)".
"""

from __future__ import annotations

import difflib
import reprlib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from service.core.options import Option

__all__ = [
    "AtLeastOne",
    "Count",
    "EnvSettingsModel",
    "Fraction",
    "Layer",
    "NonNegative",
    "Port",
    "Positive",
    "SettingsModel",
    "check_choice",
    "did_you_mean",
    "env_layers",
    "env_names",
    "is_optional",
    "leaf_paths",
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
#: pydantic's error type for the range checks below; the message completes "Setting 'x' ...".
_RANGE = "settings_range"


def _range_check(ok: typing.Callable[[Any], bool], rule: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if value is not None and not ok(value):
            raise PydanticCustomError(_RANGE, rule, {"value": value})  # the converted value
        return value

    return AfterValidator(check)


#: The range checks shared by every settings group (one wording for each rule).
Port = Annotated[int, _range_check(lambda v: 0 <= v <= 65535, "must be a port number 0..65535")]
AtLeastOne = Annotated[int, _range_check(lambda v: v >= 1, "must be >= 1")]
Count = Annotated[int, _range_check(lambda v: v >= 0, "must be >= 0")]
NonNegative = Annotated[float, _range_check(lambda v: v >= 0, "must be >= 0")]
Positive = Annotated[float, _range_check(lambda v: v > 0, "must be > 0")]
Fraction = Annotated[float, _range_check(lambda v: 0 <= v <= 1, "must be in [0, 1]")]


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


def leaf_paths(model: type[BaseModel]) -> Iterator[tuple[str, ...]]:
    """The path of every value of ``model``, through its nested settings groups."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, SettingsModel):
            yield from ((name, *rest) for rest in leaf_paths(annotation))
        else:
            yield (name,)


def env_names(model: type[SettingsModel], prefix: str) -> dict[tuple[str, ...], list[str]]:
    """The environment variables of each value, in the order they are read (later wins).

    A value is named by its old flat name (``PULMOSEG_CAPTURE_DIR``, from
    :attr:`SettingsModel.flat_names`; a top-level field by its own name) and by its nested
    spelling with ``__`` between the parts (``PULMOSEG_CAPTURE__DIR``).
    """
    flat: dict[tuple[str, ...], list[str]] = {}
    for old, path in model.flat_names.items():
        flat.setdefault(tuple(path), []).append(old)
    names = {}
    for path in leaf_paths(model):
        spellings = [*flat.get(path, []), "__".join(path)]
        names[path] = list(dict.fromkeys(prefix + name.upper() for name in spellings))
    return names


def env_layers(model: type[SettingsModel], env: Mapping[str, str], prefix: str) -> list[Layer]:
    """One layer per settings variable set in ``env``, so errors name the variable.

    Other variables with the prefix are ignored: they may belong to other components.
    """
    layers = []
    for path, variables in env_names(model, prefix).items():
        for variable in variables:
            if variable in env:
                value: Any = env[variable]
                for part in reversed(path):
                    value = {part: value}
                layers.append(Layer(f"environment variable {variable}", value))
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
    #: Names a value had before it moved into a group ("capture_dir" -> ("capture", "dir")):
    #: still accepted at the top level of files, environment and overrides.
    flat_names: ClassVar[Mapping[str, tuple[str, ...]]] = {}

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
            _merge(
                merged, nest_flat_names(cls, layer.values, layer.source), layer.source, (), origins
            )
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


class EnvSettingsModel(SettingsModel):
    """The settings of a process, or one group of them, as read from YAML and environment text.

    Read-only (see :meth:`SettingsModel.with_overrides`). Its old flat names
    (:attr:`SettingsModel.flat_names`) are accepted by direct construction too.
    """

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        return nest_flat_names(cls, data) if isinstance(data, Mapping) else data

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Environment values are text: blank or "none" clears an optional setting, lists are
        comma-separated, options ignore case, and numbers and booleans may carry spaces."""
        if not isinstance(value, str):
            return value
        name = info.field_name or ""
        annotation = cls.model_fields[name].annotation
        text = value.strip()
        if is_optional(annotation):
            if text.lower() in ("", "none"):
                return None
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        if typing.get_origin(annotation) is Annotated:  # e.g. Fraction | None
            annotation = typing.get_args(annotation)[0]
        if typing.get_origin(annotation) in (tuple, list):
            return [part for part in (p.strip() for p in text.split(",")) if part]
        if isinstance(annotation, type) and issubclass(annotation, Option):
            return annotation.parse(value, f"{cls.noun} '{cls.key_prefix}{name}'")
        return text if annotation in (bool, int, float) else value

    @field_validator("*")
    @classmethod
    def _expand_user(cls, value: Any) -> Any:
        return value.expanduser() if isinstance(value, Path) else value


def nest_flat_names(
    model: type[SettingsModel], values: Mapping[str, Any], source: str = ""
) -> Mapping[str, Any]:
    """``values`` with each old flat name moved to its group (``capture_dir: x`` becomes
    ``capture: {dir: x}``); giving both spellings of one value is an error."""
    flat = model.flat_names
    if not flat or not isinstance(values, Mapping) or not any(key in flat for key in values):
        return values
    out: dict[str, Any] = {key: value for key, value in values.items() if key not in flat}
    for old, value in values.items():
        path = flat.get(old)
        if path is None:
            continue
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is not None and not isinstance(child, Mapping):
                break  # the group itself is not a mapping: validation reports that
            node[part] = dict(child or {})
            node = node[part]
        else:
            if path[-1] in node:
                where = f" in {source}" if source else ""
                raise ValueError(
                    f"{model.noun} '{old}' is the old name of '{'.'.join(path)}'; "
                    f"give only one of them{where}."
                )
            node[path[-1]] = value
    return out


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
        section_model = _section(model, loc[:-1])
        known = list(section_model.model_fields)
        parent = _dotted(model.key_prefix, loc[:-1])
        where = f" in {source}" if source else ""
        # An old flat name is suggested as the grouped name it stands for.
        spelled = {name: name for name in known}
        if issubclass(section_model, SettingsModel):
            spelled |= {old: ".".join(new) for old, new in section_model.flat_names.items()}
        close = difflib.get_close_matches(str(loc[-1]), list(spelled), n=1)
        hint = (
            f" Did you mean '{f'{parent}.' if parent else ''}{spelled[close[0]]}'?" if close else ""
        )
        section = f" of '{parent}'" if parent else ""
        return ValueError, (
            f"Unknown {noun.lower()} '{key}'{where}.{hint} "
            f"Known {noun.lower()}s{section}: {', '.join(known)}."
        )
    suffix = f" (from {source})." if source else "."
    if kind in _EXPECTED:
        return TypeError, f"{noun} '{key}' must be {_EXPECTED[kind]}, got {value}{suffix}"
    if kind == _RANGE:
        converted = _SHORT.repr(error.get("ctx", {}).get("value", error.get("input")))
        return ValueError, f"{noun} '{key}' {error['msg']}, got {converted}{suffix}"
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
