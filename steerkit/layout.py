"""Where every artifact lives (the layout in DESIGN.md), and safe names for path parts."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def safe_name(name: str, kind: str = "behavior") -> str:
    """A name that is safe as one path component: no separators, no '..', no leading dot."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise DataError(f"{kind} name {name!r} is not allowed", where=kind,
                        fix="use letters, digits, '.', '_' and '-' only (no '/', '\\' or '..'), e.g. power-seeking")
    return name


def model_slug(model: str) -> str:
    """A model spec as one folder name: 'org/name' -> 'org--name', paths -> their last part."""
    spec = model.rstrip("/")
    if "/" in spec and not Path(spec).exists():
        spec = spec.replace("/", "--")
    else:
        spec = Path(spec).name
    return safe_name(re.sub(r"[^A-Za-z0-9._-]", "-", spec).lstrip(".") or "model", "model")


def pairs_dir(root: str | Path, behavior: str) -> Path:
    return Path(root) / "data" / "pairs" / safe_name(behavior)


def vector_path(root: str | Path, model: str, behavior: str, layer: int, method: str = "bipo") -> Path:
    suffix = "" if method == "bipo" else f".{safe_name(method, 'method')}"
    return Path(root) / "vectors" / model_slug(model) / safe_name(behavior) / f"L{int(layer)}{suffix}.safetensors"


def report_path(root: str | Path, stage: str, model: str, name: str, ext: str = "json") -> Path:
    return Path(root) / "reports" / stage / model_slug(model) / f"{safe_name(name, 'report')}.{ext}"
