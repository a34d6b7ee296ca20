"""The package's shape: no import cycle, nothing importing upward, no private helper used across modules,
Prefect only in flows/, DVC only in its glue, the light modules light, the flow file short."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from ..conftest import REPO

PKG = REPO / "steerkit"

#: the chain, bottom to top: a module may import only from its own rank or below
RANKS: dict[str, int] = {
    "errors": 0,
    "config": 0,
    "fileio": 0,
    "layout": 0,
    "data": 1,
    "models": 2,
    "vector": 2,
    "packing": 2,
    "forward": 2,
    "generate": 2,
    "export": 2,
    "train": 3,
    "recipes": 4,
    "eval": 5,
    "catalog": 6,
    "synth": 6,  # pairs a teacher writes: the model (2), its judge's rubric (eval, 5)
    "stages": 7,
    "pipeline": 8,
    "cli": 9,
    "__init__": 10,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name imported from it or None, line) for every import, function-level ones too."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out += [(target, a.name, node.lineno) for a in node.names]
    return out


def steerkit_files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def resolve(target: str, name: str | None) -> str:
    """``from steerkit.x import y``: y is a module when steerkit/x/y.py exists."""
    if name and (PKG.parent / (target.replace(".", "/") + f"/{name}.py")).is_file():
        return f"{target}.{name}"
    return target


def graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for path in steerkit_files():
        me = module_name(path)
        g.add_node(me)
        for target, name, _ in imports(path):
            target = resolve(target, name)
            if target.startswith("steerkit") and target != me and not me.startswith(target + "."):
                g.add_edge(me, target)
    return g


def rank(module: str) -> int:
    parts = module.split(".")
    return RANKS["__init__"] if len(parts) == 1 else RANKS[parts[1]]


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(graph()))
    assert not cycles, f"import cycles: {cycles}"


def test_nothing_imports_upward():
    upward = [f"{a} -> {b}" for a, b in graph().edges if rank(b) > rank(a)]
    assert not upward, "modules importing from a higher layer: " + ", ".join(upward)


def test_every_module_has_a_rank():
    assert {m.split(".")[1] for m in graph().nodes if "." in m} <= set(RANKS)


def test_no_private_helper_is_used_across_modules():
    crossing = []
    for path in steerkit_files() + sorted((REPO / "flows").glob("*.py")):
        for target, name, line in imports(path):
            if target.startswith("steerkit") and name and name.startswith("_") and not name.startswith("__"):
                crossing.append(f"{path.relative_to(REPO)}:{line} imports {target}.{name}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {
            a.asname or a.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("steerkit", "."))
            for a in node.names
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                crossing.append(f"{path.relative_to(REPO)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not crossing, "private helpers used outside their module: " + "; ".join(crossing)


@pytest.mark.parametrize(
    "dependency, allowed",
    [
        ("prefect", ("steerkit.pipeline.events",)),  # flows/, and the events a person's rollback sends
        ("prefect_dask", ()),
        ("dvc", ("steerkit.pipeline.dvc", "steerkit.catalog.remote")),  # the DVC glue and the reader of old revisions
    ],
)
def test_who_imports_prefect_and_dvc(dependency, allowed):
    users = {
        module_name(p)
        for p in steerkit_files()
        for target, _, _ in imports(p)
        if target == dependency or target.startswith(dependency + ".")
    }
    assert users <= set(allowed), f"{dependency} imported by {sorted(users - set(allowed))}"


def test_light_modules_do_not_load_torch():
    """What --help, params checking and the graph need must not pay for torch (1 s+ per command)."""
    code = (
        "import sys; import steerkit.cli, steerkit.pipeline.params, steerkit.pipeline.graph, steerkit.recipes, "
        "steerkit.stages.options; print(sorted(m for m in ('torch', 'transformers', 'prefect', 'dvc') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def test_the_flow_file_is_a_short_door():
    flow = REPO / "flows" / "pipeline.py"
    assert len(flow.read_text(encoding="utf-8").splitlines()) < 200
    used = {target for target, _, _ in imports(flow) if target.startswith("steerkit")}
    assert used and all(t.startswith(("steerkit.pipeline", "steerkit.fileio", "steerkit.errors")) for t in used)


def test_public_names_resolve():
    import steerkit

    for name in steerkit.__all__:
        assert getattr(steerkit, name) is not None, name
