"""Loading the config: YAML (or the defaults) with ``--set dotted.key=value`` overrides, built
into the frozen dataclasses of ``recsys.config.schema`` key by key. Unknown keys, wrong types and
impossible values fail fast with a one-line ``ConfigError`` that names the dotted key.

>>> cfg = load_config(None, ["source.ratings=r.csv", "model.num_factors=8", "sink.path=/tmp/wh"])
>>> cfg.model.num_factors, cfg.sink.path, cfg.model.l2_reg
(8, '/tmp/wh', 1.0)
>>> load_config(None, ["source.ratings=r.csv", "model.num_factor=8"])
Traceback (most recent call last):
...
recsys.errors.ConfigError: unknown config key 'model.num_factor' (did you mean 'model.num_factors'?)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Mapping, Optional

import yaml

from recsys.config.schema import Config
from recsys.config.validation import validate
from recsys.errors import ConfigError


def load_config(path: Optional[str], overrides: typing.Sequence[str] = (),
                job: Optional[str] = None) -> Config:
    """Read a YAML file (or start from defaults when ``path`` is None) and apply overrides.

    ``job`` (the jobs/<job>.py name) limits validation to what that job reads: the compare job
    needs no ``source``; it needs at least one ``compare.bqml`` table."""
    raw: dict = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    for item in overrides:
        _apply_override(raw, item)
    cfg = _build(Config, raw, "")
    validate(cfg, job)
    return cfg


def to_dict(cfg: Any) -> Any:
    """Plain-dict view of a config object, for logging and model metadata."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
    parts = _override_path(key.strip().split("."))
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def _override_path(parts: list) -> list:
    """Key path of an override; below a mapping field (spark.conf) the rest is one key."""
    cls: Any = Config
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            break
        hints = typing.get_type_hints(cls)
        tp = hints.get(part)
        if tp is None:
            break
        if _is_mapping(tp):
            rest = ".".join(parts[depth + 1:])
            return parts[: depth + 1] + ([rest] if rest else [])
        cls = tp
    return parts


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name in names:
        if name in raw:
            kwargs[name] = _coerce(hints[name], raw[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0] if len(inner) == 1 else typing.Union[tuple(inner)], value, key)
    if origin is typing.Union:  # Union[str, Tuple[str, ...]]: one value or a list of them
        listed = [a for a in args if typing.get_origin(a) is tuple]
        single = [a for a in args if typing.get_origin(a) is not tuple]
        if listed and isinstance(value, (list, tuple)):
            return _coerce(listed[0], value, key)
        return _coerce(single[0], value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if _is_mapping(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return types.MappingProxyType({str(k): _scalar_str(v) for k, v in value.items()})
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"config key '{key}' must be a non-empty list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if value is None:
        raise ConfigError(f"config key '{key}' must not be empty")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def _is_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) in (collections.abc.Mapping, dict)


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
