"""Typed configs from TOML files: dataclass defaults, overridden by the file.

Unknown keys are errors, so a typo in a config file never passes silently.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

from asr.errors import AsrError


def _merge(instance, data: dict, where: str):
    if not isinstance(data, dict):
        raise AsrError(f"{where}: expected a table")
    hints = typing.get_type_hints(type(instance))
    known = {f.name for f in dataclasses.fields(instance)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise AsrError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = _merge(current, value, f"{where}.{key}")
        elif current is None and isinstance(value, dict):
            cls = next(a for a in typing.get_args(hints[key]) if dataclasses.is_dataclass(a))
            changes[key] = _merge(cls(), value, f"{where}.{key}")
        elif value is False and current is not None and dataclasses.is_dataclass(current):
            changes[key] = None  # e.g. specaugment = false
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(instance, **changes)


def load_config(default, path=None):
    """``default`` (a dataclass instance) overridden by the TOML file at ``path``."""
    if path is None:
        return default
    path = Path(path)
    if not path.is_file():
        raise AsrError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise AsrError(f"{path}: not valid TOML ({exc})") from None
    return _merge(default, data, path.name)
