"""Configuration types: frozen dataclasses whose fields carry their own help text.

Every knob of steerkit is a field of one such dataclass (``BipoConfig``, ``EvalConfig``, ...). The
CLI declares its options from those fields, ``params.yaml`` sections are checked against them and
the library takes them as they are, so a knob is spelled, documented and defaulted in one place.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from .errors import VectorError


def knob(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    minimum: float | None = None,
    positive: bool = False,
    unique: bool = False,
) -> Any:
    """A dataclass field with its help and what values it allows.

    ``choices``: the allowed strings; ``minimum``: the smallest allowed number; ``positive``: > 0;
    ``unique``: a list without repeats; ``flag``: the CLI flag when it is not ``--<name>``.
    """
    meta = {"help": help, "choices": choices, "flag": flag, "minimum": minimum, "positive": positive, "unique": unique}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen value as a knob default")
    return dataclasses.field(default=default, metadata=meta)


def knobs(cls: type) -> tuple[dataclasses.Field, ...]:
    """The fields of a configuration type, in declaration order."""
    return dataclasses.fields(cls)


def knob_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in knobs(cls))


def flag(cls: type, name: str) -> str:
    """The CLI flag of a knob: ``--<name with dashes>`` unless the field names another."""
    f = _field(cls, name)
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


def help_of(cls: type, name: str) -> str:
    return _field(cls, name).metadata.get("help", "")


def choices_of(cls: type, name: str) -> tuple[str, ...] | None:
    return _field(cls, name).metadata.get("choices")


def default_of(cls: type, name: str) -> Any:
    return _field(cls, name).default


@cache
def types_of(cls: type) -> dict[str, Any]:
    """Each field's resolved type annotation (``int``, ``float | None``, ``tuple[float, ...]``...)."""
    return typing.get_type_hints(cls)


def problems(cfg: Any) -> list[tuple[str, str]]:
    """(field, what is wrong) for every value of ``cfg`` its knob does not allow (empty: all fine)."""
    out: list[tuple[str, str]] = []
    for f in knobs(type(cfg)):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            continue
        values = value if isinstance(value, tuple) else (value,)
        if meta.get("choices") and any(v not in meta["choices"] for v in values):
            out.append((f.name, f"must be one of {', '.join(meta['choices'])}, found {value!r}"))
        numbers = value if isinstance(value, tuple) else (value,)
        numeric = [v for v in numbers if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if meta.get("minimum") is not None and any(v < meta["minimum"] for v in numeric):
            out.append((f.name, f"must be >= {meta['minimum']:g}, found {value!r}"))
        if meta.get("positive") and any(not v > 0 for v in numeric):
            out.append((f.name, f"must be > 0, found {value!r}"))
        if meta.get("unique") and isinstance(value, tuple) and len(set(value)) != len(value):
            out.append((f.name, f"has repeated values: {list(value)}"))
    return out


def with_overrides(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """``cfg`` with the known fields of ``overrides`` that are not None replaced (others are ignored)."""
    names = set(knob_names(type(cfg)))
    given = {k: v for k, v in overrides.items() if k in names and v is not None}
    return dataclasses.replace(cfg, **given)


def differences(cfg: Any, base: Any) -> dict[str, Any]:
    """The fields in which ``cfg`` differs from ``base`` (same type): what a user overrode."""
    return {
        f.name: to_plain(getattr(cfg, f.name))
        for f in knobs(type(cfg))
        if getattr(cfg, f.name) != getattr(base, f.name)
    }


def to_plain(obj: Any) -> Any:
    """A configuration (or anything holding them) as plain JSON-able data: tuples as lists, paths as posix."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return obj.as_posix()
    return obj


def _field(cls: type, name: str) -> dataclasses.Field:
    for f in knobs(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def as_float(m: Any, key: str = "multiplier") -> float:
    """``m`` as a finite float, else a VectorError naming ``key`` (what the number is for)."""
    try:
        value = float(m)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor with several elements
        raise VectorError(f"{key} {m!r} is not a number", where=key, fix="pass a number such as -1, 0.5 or 2") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise VectorError(f"{key} {m!r} is not finite", where=key, fix="pass a finite number")
    return value
