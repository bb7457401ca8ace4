"""Fill a config dataclass from a YAML file and `key=value` command-line overrides."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from paretoalign.errors import InputError

C = TypeVar("C")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _accepts(tp: Any, value: Any) -> bool:
    """Whether `value` fits the annotation `tp` (the subset of typing our configs use)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _coerce(tp: Any, value: Any) -> Any:
    if tp is float or (typing.get_origin(tp) in (typing.Union, types.UnionType) and float in typing.get_args(tp)):
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


def _set_fields(cls: type, values: dict[str, Any], where: str, line_of: dict[str, int] | None = None
                ) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        line = (line_of or {}).get(key)
        if key not in names:
            raise InputError(f"unknown setting; known settings: {', '.join(sorted(names))}", path=where, line=line,
                             field=key)
        if not _accepts(hints[key], value):
            raise InputError(f"expected {hints[key]}, got {value!r}", path=where, line=line, field=key)
        out[key] = _coerce(hints[key], value)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Split one `key=value` override; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise InputError(f"override {text!r} is not of the form key=value", path="command line")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise InputError(f"cannot parse value {raw!r}: {exc}", path="command line", field=key.strip()) from exc
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
    return key.strip(), value


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), *,
                ignore: Sequence[str] = (), **explicit: Any) -> C:
    """An instance of dataclass `cls` from YAML `path`, then `overrides`, then non-None `explicit` values.

    Keys in `ignore` (e.g. a `method` that chose `cls`) are skipped wherever they appear."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError("config file not found", path=str(p))
        try:
            node = yaml.compose(p.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InputError(f"invalid YAML: {exc}", path=str(p), line=mark.line + 1 if mark else None) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError("a config file must be a mapping of setting: value", path=str(p))
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if isinstance(node, yaml.MappingNode) else {}
        values.update(_set_fields(cls, {k: v for k, v in loaded.items() if k not in ignore}, str(p), lines))
    for text in overrides:
        key, value = parse_override(text)
        if key not in ignore:
            values.update(_set_fields(cls, {key: value}, "command line"))
    values.update(_set_fields(cls, {k: v for k, v in explicit.items() if v is not None}, "command line"))
    return cls(**values)
