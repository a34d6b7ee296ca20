"""The code a stage runs, as files: its stage module and every steerkit module that module imports.

A fix to BiPO must rebuild the vectors, and a fix to the README must not. Each stage's DVC deps (and
so the flow's cache key, which hashes a stage's deps) list the source files of the steerkit modules
its function can run — found from the source by following ``import`` statements (also those inside
functions), not by importing anything — with the ``__init__.py`` of their packages (the version among
them) and the package data those modules read. The CLI, the pipeline's own glue and the docs are not among them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path, PurePosixPath

PACKAGE = Path(__file__).resolve().parents[1]  # the steerkit package folder
#: package data a module reads at run time (a changed default prompt changes the evaluation)
DATA = {"steerkit.data.prompts": ("data/prompts.yaml",)}


def _module_files() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, files: dict[str, Path]) -> set[str]:
    """The steerkit modules ``module`` imports (absolute or relative, at any depth of its source)."""
    path = files[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = (
                (node.module or "")
                if not node.level
                else ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([node.module] if node.module else [])
                )
            )
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in files else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in files}


@cache
def stage_code(stage: str) -> tuple[str, ...]:
    """The files (posix, relative to the folder holding the package) the stage ``stage`` runs, sorted."""
    files = _module_files()
    todo, seen = [f"steerkit.stages.{stage}", "steerkit"], set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module, files))
            parent = module.rpartition(".")[0]  # importing a module runs its packages' __init__ too
            todo.extend([parent] if parent else [])
    paths = {PurePosixPath(files[m].relative_to(PACKAGE.parent).as_posix()) for m in seen}
    paths |= {PurePosixPath("steerkit", d) for m in seen for d in DATA.get(m, ())}
    return tuple(sorted(str(p) for p in paths))
