"""Typed configs: nested dataclasses <-> YAML, with dotted command-line overrides.

``load_config("x.yaml", ["model.connector.stack=4"])`` reads the YAML, applies the
overrides and builds the dataclass tree, checking every key and type.  Polymorphic
component fields (encoder, connector, llm) pick their dataclass from the registry by
their ``type`` key.  Errors name the dotted path of the bad key (``ConfigError``).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from speechllm.registry import ComponentConfig


class ConfigError(ValueError):
    """A config that cannot be built: unknown key, wrong type, bad YAML."""


def from_dict(cls: Any, data: Any, path: str = "") -> Any:
    """Build ``cls`` (a dataclass, enum, container or scalar type) from plain data."""
    where = path or "<root>"
    origin = typing.get_origin(cls)
    if origin in (Union, types.UnionType):
        args = typing.get_args(cls)
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return from_dict(arg, data, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {data!r} matches none of {args}: {'; '.join(errors)}")
    if origin in (list, tuple):
        if not isinstance(data, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {data!r}")
        (item,) = typing.get_args(cls)[:1] or (Any,)
        return [from_dict(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {data!r}")
        return dict(data)
    if cls is Any:
        return data
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        try:
            return cls(data)
        except ValueError:
            raise ConfigError(f"{where}: {data!r} is not one of {[e.value for e in cls]}") from None
    if dataclasses.is_dataclass(cls):
        return _dataclass_from_dict(cls, data, path)
    return _scalar(cls, data, where)


def _dataclass_from_dict(cls: type, data: Any, path: str) -> Any:
    where = path or "<root>"
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    if issubclass(cls, ComponentConfig) and cls.registry is not None:
        if "type" not in data:
            raise ConfigError(f"{where}: missing 'type' (one of {cls.registry.names()})")
        try:
            cls = cls.registry.config_class(data["type"])
        except KeyError as err:
            raise ConfigError(f"{where}.type: {err.args[0]}") from None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    kwargs = {k: from_dict(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return obj


def _scalar(cls: Any, data: Any, where: str) -> Any:
    if cls is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if cls in (int, float, str, bool) and (not isinstance(data, cls) or (cls is int and isinstance(data, bool))):
        raise ConfigError(f"{where}: expected {cls.__name__}, got {data!r}")
    return data


def to_dict(obj: Any) -> Any:
    """The inverse of :func:`from_dict`: plain YAML-safe data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to nested plain data."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: bad value ({err})") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(cls: Any, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Read ``path`` (optional), apply dotted overrides and build ``cls``."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def save_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
