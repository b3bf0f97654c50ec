"""Typed configs: one strict loader for every dataclass, from TOML files and from model files.

``from_dict(cls, data)`` builds a dataclass from plain data and ``load_config(default,
path)`` overrides a default instance with a TOML file. Both check every value against
the field's annotation (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``,
``tuple[...]``, ``list[...]``, ``X | None`` and nested dataclasses), so ``lr = "1e-3"``
or a typo in a key is an error that names the key, never a silent default. A TOML file
may start from another (``base = "cv.toml"``) and change only what differs.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path

from asr.errors import AsrError


def _kind(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _convert(value, hint, where: str, current=None):
    """``value`` as the annotation ``hint`` wants it, or an ``AsrError`` naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if value is False and current is not None and any(dataclasses.is_dataclass(a) for a in options):
            return None  # e.g. specaugment = false turns an optional section off
        errors = []
        for option in options:
            mine = current if dataclasses.is_dataclass(option) and isinstance(current, option) else None
            try:
                return _convert(value, option, where, mine)
            except AsrError as exc:
                errors.append(str(exc))
        raise AsrError(errors[0] if len(errors) == 1 else f"{where}: {_kind(value)} fits none of "
                       f"{', '.join(getattr(o, '__name__', str(o)) for o in options)}")
    if origin is typing.Literal:
        if value not in args:
            raise AsrError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise AsrError(f"{where}: expected a table, got {_kind(value)}")
        return _merge(current if isinstance(current, hint) else None, hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise AsrError(f"{where}: expected a list, got {_kind(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise AsrError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else typing.Any
            items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise AsrError(f"{where}: expected a table, got {_kind(value)}")
        if len(args) == 2:
            return {_convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AsrError(f"{where}: expected a number, got {_kind(value)} ({value!r})")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AsrError(f"{where}: expected an integer, got {_kind(value)} ({value!r})")
        return value
    if hint in (str, bool):
        if type(value) is not hint:
            raise AsrError(f"{where}: expected {_kind(hint())}, got {_kind(value)} ({value!r})")
        return value
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise AsrError(f"{where}: cannot read {_kind(value)} as {hint}")


def _merge(instance, cls, data: dict, where: str):
    """``instance`` (or ``cls()``'s defaults when None) with the keys of ``data`` replaced.

    A dataclass may name, in ``NAMED_BASES``, fields whose default comes from a name in another
    field: ``{"model": ("model_name", lookup)}`` starts ``model`` from ``lookup(model_name)``
    when the data names one, and the data's ``model`` table then overrides that base."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for field_name, (name_key, lookup) in getattr(cls, "NAMED_BASES", {}).items():
        if name_key in data:
            name = _convert(data[name_key], str, f"{where}.{name_key}" if where else name_key)
            base = lookup(name)
            instance = dataclasses.replace(instance, **{field_name: base}) if instance is not None else None
            if instance is None:
                instance = cls(**{field_name: base})
    values = {}
    for key, value in data.items():
        if key not in known:
            raise AsrError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        current = getattr(instance, key) if instance is not None else None
        values[key] = _convert(value, hints[key], f"{where}.{key}" if where else key, current)
    try:
        return dataclasses.replace(instance, **values) if instance is not None else cls(**values)
    except TypeError as exc:  # a required field left out
        raise AsrError(f"{where or cls.__name__}: {exc}") from None
    except ValueError as exc:  # a dataclass's own checks (__post_init__)
        raise AsrError(f"{where or cls.__name__}: {exc}") from None


def from_dict(cls, data, where: str = ""):
    """A ``cls`` dataclass from plain data (a model file's stored config, a TOML table), strictly."""
    if not isinstance(data, dict):
        raise AsrError(f"{where or cls.__name__}: expected a table, got {_kind(data)}")
    return _merge(None, cls, data, where or cls.__name__)


def to_dict(instance) -> dict:
    """Plain data (tuples as lists) that ``from_dict`` reads back."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(instance))


def _overlay(base: dict, data: dict) -> dict:
    """``base`` with ``data``'s keys on top; tables merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in data.items():
        below = merged.get(key)
        merged[key] = _overlay(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def read_toml(path, _seen: tuple[Path, ...] = ()) -> dict:
    """A TOML file's tables. ``base = "other.toml"`` (relative to this file) starts from that
    file's tables, and this file's keys override them, table by table."""
    path = Path(path)
    if not path.is_file():
        raise AsrError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AsrError(f"{path}: not valid TOML ({exc})") from None
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str):
        raise AsrError(f"{path}: base: expected a string (a TOML file), got {_kind(base)}")
    base_path = path.parent / base
    if base_path.resolve() in _seen + (path.resolve(),):
        raise AsrError(f"{path}: base: {base} is a cycle of bases")
    return _overlay(read_toml(base_path, _seen + (path.resolve(),)), data)


def load_config(default, path=None, data: dict | None = None):
    """``default`` (a dataclass instance) overridden by the TOML file at ``path`` (or by ``data``)."""
    if path is None and data is None:
        return default
    if data is None:
        data = read_toml(path)
    return _merge(default, type(default), data, Path(path).name if path else "")
