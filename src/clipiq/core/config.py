"""Experiment configs: YAML files with ``key.sub=value`` command-line overrides (BasicSR-style)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clipiq.core.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 as a float (YAML 1.1 wants 1.0e-3)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML with clipiq's loader."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def parse_value(text: str) -> Any:
    """Parse a command-line value with YAML rules (numbers, booleans, lists); unparsable text stays text."""
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=3`` -> (['a', 'b'], 3); values follow YAML rules (numbers, booleans, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (nested keys with dots: optim.lr=1e-3)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str], strict: bool = True) -> dict[str, Any]:
    """Return a copy of ``cfg`` with overrides applied; with ``strict`` an unknown key is an error."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for i, k in enumerate(keys[:-1]):
            if k not in node:
                if strict:
                    raise ConfigError(f"override {item!r}: no key {'.'.join(keys[: i + 1])!r} in the config")
                node[k] = {}
            if not isinstance(node[k], dict):
                raise ConfigError(f"override {item!r}: {'.'.join(keys[: i + 1])!r} is not a section")
            node = node[k]
        if strict and node and keys[-1] not in node:  # an empty mapping is free-form (see merge)
            known = ", ".join(sorted(node)) or "none"
            raise ConfigError(f"override {item!r}: unknown key {'.'.join(keys)!r} (known here: {known})")
        if strict and keys[-1] in node:
            check_type(node[keys[-1]], value, f"override {item!r}: {'.'.join(keys)}")
        node[keys[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: Sequence[str] = (), defaults: Mapping[str, Any] | None = None,
                strict: bool = True) -> dict[str, Any]:
    """Read a YAML config, merge it over ``defaults`` and apply ``key=value`` overrides."""
    cfg: dict[str, Any] = copy.deepcopy(dict(defaults or {}))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        cfg = merge(cfg, loaded, strict=strict and bool(defaults), where=str(p))
    return apply_overrides(cfg, overrides, strict=strict)


def merge(base: Mapping[str, Any], new: Mapping[str, Any], strict: bool = False, where: str = "") -> dict[str, Any]:
    """Recursive dict merge; with ``strict`` keys absent from ``base`` and values of another type are refused."""
    out = copy.deepcopy(dict(base))
    for k, v in new.items():
        if strict and k not in out:
            raise ConfigError(f"{where}: unknown key {k!r} (known: {', '.join(sorted(out))})")
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            # An empty default mapping (e.g. data.options) is free-form: its keys are not checked.
            out[k] = merge(out[k], v, strict=strict and bool(out[k]), where=f"{where}:{k}")
        else:
            if strict and k in out:
                check_type(out[k], v, f"{where}:{k}" if where else k)
            out[k] = copy.deepcopy(v)
    return out


def _type_word(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def check_type(default: Any, value: Any, key: str) -> None:
    """Refuse a config value whose type differs from its default's (None on either side is free).

    Integers are accepted where numbers are expected; nothing else is converted, so ``train.steps=many``
    or ``seed=[1,2]`` fail here, naming the key, instead of deep inside a run.
    """
    if default is None or value is None:
        return
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list | tuple):
        ok = isinstance(value, list | tuple)
    elif isinstance(default, Mapping):
        ok = isinstance(value, Mapping)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{key} must be {_type_word(default)} (like its default {default!r}), "
                          f"got {value!r}")


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(dict(cfg), sort_keys=False), encoding="utf-8")


def config_json(cfg: Mapping[str, Any]) -> str:
    """A canonical JSON form of a config (sorted keys), for comparing runs."""
    return json.dumps(cfg, sort_keys=True, default=str)
