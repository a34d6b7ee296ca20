"""The catalog stage: every ``vectors/**/*.safetensors`` of the project → ``vectors/catalog.json``."""

from __future__ import annotations

from pathlib import Path

from ..catalog.build import rebuild_catalog
from ..catalog.index import Catalog


def catalog(root: str | Path = ".") -> Catalog:
    """Rebuild the project's catalog (under its lock; an unchanged tree writes the same bytes)."""
    return rebuild_catalog(root)
