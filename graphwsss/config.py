"""Typed settings: dataclasses loaded from YAML, with ``key=value`` command-line overrides.

Every setting has one home: a field of a dataclass below (or of a stage's own config section),
with its default and a comment. ``load_config`` starts from those defaults, applies a YAML file,
then dotted overrides such as ``graph.builder=rgbxy`` or ``crf.enabled=false``; values are
parsed with YAML's safe loader and checked against the field's type, and unknown keys are errors.
Then :func:`validate_settings` checks every value against the range declared next to its field
(``graphwsss.settings.ranged``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A setting that does not exist, or has a value of the wrong type or out of its range."""


def _check_value(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` converted to ``annotation`` where that is lossless, else raise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        others = [option for option in options if option is not type(None)]
        if len(others) == 1:             # X | None: X's own message ("expected int, got 2.5")
            return _check_value(value, others[0], key)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key}: {value!r} fits none of {annotation}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_types = typing.get_args(annotation)
        item_type = item_types[0] if item_types else Any
        items = [_check_value(item, item_type, f"{key}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return _build(annotation, value, prefix=f"{key}.")
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type[ConfigT], values: dict[str, Any], prefix: str = "") -> ConfigT:
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(prefix + key for key in unknown)}; "
                          f"{prefix or 'top level'} has {', '.join(sorted(names))}")
    base = cls()
    updates = {}
    for key, value in values.items():
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            merged = dataclasses.asdict(current) | value
            updates[key] = _build(type(current), merged, prefix=f"{prefix}{key}.")
        else:
            updates[key] = _check_value(value, hints[key], prefix + key)
    return dataclasses.replace(base, **updates)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` to the nested dict ``{"a": {"b": 1}, "c": "x"}`` (YAML-parsed values)."""
    nested: dict[str, Any] = {}
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key=value")
        key, text = override.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return nested


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


PACKAGED_CONFIGS = Path(__file__).parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the configs shipped inside the package (``graphwsss/configs/<name>.yaml``)."""
    return sorted(path.stem for path in PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config(name: str | os.PathLike) -> Path:
    """The YAML file a ``--config`` names: an existing path as given; else a bare name such as
    ``box_voc`` or ``box_voc.yaml`` is a config shipped in the package (``graphwsss/configs``),
    so that it works from any folder and from an installed wheel. :class:`ConfigError` otherwise."""
    path = Path(name)
    if path.is_file():
        return path
    text = str(name)
    if "/" not in text and os.sep not in text:
        packaged = PACKAGED_CONFIGS / (text if text.endswith((".yaml", ".yml")) else f"{text}.yaml")
        if packaged.is_file():
            return packaged
        raise ConfigError(f"{name}: config file is missing, and it is not a packaged config "
                          f"(known: {', '.join(packaged_configs())})")
    raise ConfigError(f"{path}: config file is missing")


def load_config(cls: type[ConfigT], path: str | os.PathLike | None = None,
                overrides: list[str] | None = None, defaults: list[str] | None = None) -> ConfigT:
    """Defaults of ``cls``, then ``defaults`` (``key=value``, e.g. per supervision), then the
    YAML file at ``path`` (a path, or the name of a packaged config: :func:`resolve_config`),
    then ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = resolve_config(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file is missing")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
    values = _deep_merge(parse_overrides(defaults or []), values)
    values = _deep_merge(values, parse_overrides(overrides or []))
    config = _build(cls, values)
    validate_settings(config)
    return config


_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def validate_settings(config: Any, prefix: str = "") -> None:
    """Check every field of the dataclass ``config`` (nested ones too) against what its field's
    ``metadata`` allows (``range``: bounds ``ge``, ``gt``, ``le``, ``lt`` for a number or each item
    of a tuple, ``None`` passing; ``check``: a function returning a complaint or ``None``).

    Raises :class:`ConfigError` with one line naming the dotted key, the value and what is allowed.
    """
    for spec in dataclasses.fields(config):
        key, value = prefix + spec.name, getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            validate_settings(value, prefix=f"{key}.")
            continue
        if value is None:
            continue
        bounds = spec.metadata.get("range") or {}
        note = spec.metadata.get("note") or ""
        if bounds:
            items = value if isinstance(value, (list, tuple)) else (value,)
            allowed = " and ".join(f"{_BOUND_WORDS[name]} {bound:g}"
                                   for name, bound in bounds.items())
            allowed += (", each item" if isinstance(value, (list, tuple)) else "") + \
                (f"; {note}" if note else "")
            for item in items:
                if isinstance(item, bool) or not isinstance(item, (int, float)) \
                        or not math.isfinite(item) or not all(_within(item, name, bound)
                                                             for name, bound in bounds.items()):
                    shown = _plain(value) if isinstance(value, (list, tuple)) else value
                    raise ConfigError(f"{key}: {shown!r} is out of range (allowed: {allowed})")
        check = spec.metadata.get("check")
        problem = check(value) if check is not None else None
        if problem:
            raise ConfigError(f"{key}: {_plain(value)!r} {problem}")


def _within(value: float, name: str, bound: float) -> bool:
    return {"ge": value >= bound, "gt": value > bound, "le": value <= bound,
            "lt": value < bound}[name]


def to_yaml(config: Any) -> str:
    """The resolved settings as YAML text (tuples written as lists)."""
    return yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
