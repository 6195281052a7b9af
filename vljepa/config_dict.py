"""Configs ⇄ plain dicts, and dotted-key overrides: the generic half of ``vljepa.config``.

Works on any tree of frozen config dataclasses: ``config_from_dict`` rebuilds one (an unknown key
is an error naming the nearest valid one), ``apply_overrides`` applies ``--set``-style dotted
keys, ``replace`` is ``dataclasses.replace`` with dotted keys. ``vljepa.config`` re-exports them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from its ``to_dict`` form; an unknown key is a ``TypeError``.

    The error names the nearest valid option: ``TrainConfig: unknown option 'lrr'; did you mean 'lr'?``.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise TypeError("; ".join(f"{cls.__name__}: unknown option {key!r}{_did_you_mean(key, names)}"
                                  for key in unknown))
    return cls(**{key: _coerce(hints[key], value) for key, value in data.items()})


def _did_you_mean(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (valid: {sorted(valid)})"


def _section_type(hint: Any) -> type | None:
    """The config dataclass a field holds (``X`` or ``X | None``), or None for a plain value."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        sections = [arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)]
        return sections[0] if len(sections) == 1 else None
    return None


def _coerce(hint: Any, value: Any) -> Any:
    section = _section_type(hint)
    if section is not None and isinstance(value, Mapping):
        return config_from_dict(section, value)
    if section is not None and value is not None and not isinstance(value, section):
        raise TypeError(f"{section.__name__}: expected a mapping, got {type(value).__name__}")
    if typing.get_origin(hint) is tuple and isinstance(value, list):  # JSON has no tuples
        return tuple(value)
    return value


class ConfigKeyError(KeyError):
    """A config key or recipe that does not exist (``apply_overrides``, ``recipe``)."""

    def __str__(self) -> str:  # KeyError's own __str__ would print the message's repr()
        return str(self.args[0])


def _dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, sections included: ``["data", "data.corpus_dir", ...]``."""
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        keys.append(prefix + name)
        section = _section_type(hint)
        if section is not None:
            keys.extend(_dotted_keys(section, f"{prefix}{name}."))
    return keys


def apply_overrides(cfg: Any, overrides: Mapping[str, object]) -> Any:
    """``cfg`` with dotted-key overrides applied: ``{"train.lr": 1e-4, "slurm.partition": "debug"}``.

    A key that names no option, at any depth, raises ``ConfigKeyError`` (a ``KeyError``) naming
    the nearest valid dotted key; a key may also name a whole section with a mapping as its value.
    The result is rebuilt through ``to_dict``/``from_dict``, so it is a config ``from_json`` would
    accept (lists become tuples where a field is a tuple).

    Args:
        cfg: the config to start from (a preset, a file, a stage's config).
        overrides: dotted key -> value, applied in order.
    """
    data = dataclasses.asdict(cfg)
    for key, value in overrides.items():
        node, cls = data, type(cfg)
        parts = key.split(".")
        for depth, part in enumerate(parts):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                close = difflib.get_close_matches(key, _dotted_keys(type(cfg)), n=1)
                where = f"under {'.'.join(parts[:depth])!r}" if depth else "at the top level"
                hint_text = f"did you mean {close[0]!r}?" if close else f"valid keys {where}: {sorted(hints)}"
                raise ConfigKeyError(f"unknown config key {key!r}; {hint_text}")
            if depth == len(parts) - 1:
                node[part] = value
                break
            section = _section_type(hints[part])
            if section is None or not isinstance(node[part], dict):
                raise ConfigKeyError(f"unknown config key {key!r}: {'.'.join(parts[:depth + 1])!r} "
                                       "is a value, not a section")
            node, cls = node[part], section
    return config_from_dict(type(cfg), data)


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that also accepts dotted keys: ``replace(cfg, **{"train.lr": 1e-4})``."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    for head, sub in nested.items():
        flat[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **flat)
