"""docs/errors.md names every error class steerkit defines (so a new one cannot go undocumented)."""

from __future__ import annotations

import ast

from ..conftest import REPO


def _error_classes() -> dict[str, str]:
    """Every class in steerkit/ deriving (transitively, by name) from SteerkitError -> its file."""
    bases: dict[str, tuple[list[str], str]] = {}
    for path in sorted((REPO / "steerkit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                bases[node.name] = (names, path.relative_to(REPO / "steerkit").as_posix())

    def is_error(name: str, seen: frozenset = frozenset()) -> bool:
        if name == "SteerkitError":
            return True
        return name in bases and name not in seen and any(is_error(b, seen | {name}) for b in bases[name][0])

    return {name: f for name, (_, f) in bases.items() if is_error(name)}


def test_every_error_class_is_documented():
    doc = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    classes = _error_classes()
    assert {"SteerkitError", "DataError", "VectorError", "StorageError", "CatalogError"} <= set(classes)
    missing = sorted(f"{name} ({f})" for name, f in classes.items() if f"`{name}`" not in doc)
    assert not missing, "error classes missing from docs/errors.md: " + ", ".join(missing)


def test_readme_links_the_error_guide():
    assert "docs/errors.md" in (REPO / "README.md").read_text(encoding="utf-8")
