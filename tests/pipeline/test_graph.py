"""The stage graph is declared once (steerkit/pipeline/graph.py); dvc.yaml, the flow's plan and the printed
command lines must all agree with it.

* dvc.yaml, as DVC itself resolves it with the shipped params.yaml, has exactly the graph's stages with
  the same deps, outs, metrics, plots and params (and a dvc.yaml that drops a dependency is caught);
* DVC's own dependency graph has the same edges as the graph's ``upstream`` (which the flow plans with);
* every command line ``steerkit pipeline check --commands`` prints, run through the real CLI, reaches
  the same stage function with the same arguments as ``steerkit pipeline stage`` calls it with.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from steerkit.models import LoadedModel
from steerkit.pipeline import graph
from steerkit.pipeline.params import load_params
from steerkit.vector import SteeringVector

from ..conftest import REPO
from .conftest import make_project, write_params


def dvc_stages(root: Path) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages as DVC resolves them: address -> deps, outs, metrics, plots, params."""
    from contextlib import chdir

    from dvc.repo import Repo

    with chdir(root), Repo(".") as repo:
        out = {}
        for st in repo.index.stages:
            if st.path_in_repo != "dvc.yaml":
                continue
            out[st.addressing] = {
                "deps": {d.def_path for d in st.deps if not hasattr(d, "params")},
                "params": {k for d in st.deps if hasattr(d, "params") for k in d.params},
                "outs": {o.def_path for o in st.outs if not o.metric and not o.plot},
                "metrics": {o.def_path for o in st.outs if o.metric},
                "plots": {o.def_path for o in st.outs if o.plot},
                "cmd": st.cmd,
            }
        edges = {s.addressing: {u.addressing for u in repo.index.graph.successors(s)} for s in repo.index.graph.nodes}
    return out, edges


def disagreements(root: Path) -> list[str]:
    """Every way dvc.yaml (under ``root``) differs from the graph built from ``root/params.yaml``."""
    p = load_params(root / "params.yaml")
    nodes = {n.address: n for n in graph.nodes(p)}
    stages, _ = dvc_stages(root)
    problems = [f"{a}: in the graph, not in dvc.yaml" for a in set(nodes) - set(stages)]
    problems += [f"{a}: in dvc.yaml, not in the graph" for a in set(stages) - set(nodes)]
    for address in set(nodes) & set(stages):
        n, s = nodes[address], stages[address]
        want = {
            "deps": set(n.deps),
            "params": set(n.params),
            "outs": set(n.outs),
            "metrics": set(n.metrics),
            "plots": set(n.plots),
            "cmd": f"steerkit pipeline stage {n.stage}" + (f" {n.name}" if n.name else ""),
        }
        problems += [f"{address}.{k}: dvc.yaml {s[k]!r}, graph {want[k]!r}" for k in want if s[k] != want[k]]
    return sorted(problems)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """The shipped dvc.yaml and params.yaml in a DVC repository of their own (the real project is not touched)."""
    root = tmp_path_factory.mktemp("shipped")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    (root / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    return root


def test_dvc_yaml_is_the_graph(shipped):
    assert disagreements(shipped) == []


def test_a_dvc_yaml_that_drops_a_dependency_is_caught(shipped, tmp_path):
    for name in ("params.yaml", ".dvc"):
        (shutil.copytree if name == ".dvc" else shutil.copy)(shipped / name, tmp_path / name)
    spec = yaml.safe_load((shipped / "dvc.yaml").read_text())
    spec["stages"]["evaluate"]["do"]["deps"].remove("${evaluate.texts}")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    found = disagreements(tmp_path)
    assert found and all(".deps:" in f and f.startswith("evaluate@") for f in found)


def test_dvc_dependency_edges_are_the_graphs_upstream(shipped):
    p = load_params(shipped / "params.yaml")
    every = graph.nodes(p)
    _, edges = dvc_stages(shipped)
    ours = {n.address: {u.address for u in graph.upstream(n, every)} for n in every}
    assert ours == edges


# ------------------------------------------------------------------------ commands == calls
class Stop(Exception):
    """Raised by a recorded stage function: the call was captured, nothing runs."""


def _plain(value: Any) -> Any:
    if isinstance(value, LoadedModel):
        return value.name
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("./"):
        return value[2:]
    return value


#: stage function -> the arguments that do not describe what is computed (progress bars, file locations in staging)
IGNORED = {"progress", "resume", "engine", "device", "dtype", "log"}


def bound(fn: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    b = inspect.signature(fn).bind(*args, **kwargs)
    b.apply_defaults()
    out = {k: _plain(v) for k, v in b.arguments.items() if k not in IGNORED}
    if "out" in out and fn.__name__ == "train_vector":  # the stage writes into a staging folder first
        out["out"] = Path(out["out"]).name
    return out


def record(monkeypatch, calls: list) -> None:
    """Replace every stage function the CLI and the pipeline reach with one that records its arguments."""
    import importlib

    import steerkit.stages.train as train_stage

    # every stage of the graph: its function is steerkit.stages.<stage>.<stage> (train: its train_vector)
    for module, name in ((importlib.import_module(f"steerkit.stages.{s.name}"), s.name) for s in graph.STAGES):
        if name == "train":
            continue
        real = inspect.unwrap(getattr(module, name))

        def fake(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            calls.append((_real.__name__, bound(_real, args, kwargs)))
            raise Stop()

        fake.__wrapped__ = real
        monkeypatch.setattr(module, name, fake)
    real_vector = inspect.unwrap(train_stage.train_vector)

    def fake_vector(*args: Any, **kwargs: Any) -> Any:
        calls.append(("train_vector", bound(real_vector, args, kwargs)))
        Path(args[2]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[2]).write_bytes(b"")  # so that the stage can move its staging folder into place
        return SteeringVector({1: torch.zeros(4)}), {"path": str(args[2]), "seconds": 0.0}

    fake_vector.__wrapped__ = real_vector
    monkeypatch.setattr(train_stage, "train_vector", fake_vector)


def test_every_printed_command_line_is_the_stage_call(tmp_path, tiny_model_dir, monkeypatch):
    from steerkit.cli import app

    root = make_project(tmp_path / "proj", tiny_model_dir, git=False)
    monkeypatch.chdir(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["behaviors"]["pirate"] = {
        "data": {"generate": {"describe": "talks like a pirate"}},
        "train": {},
        "evaluate": {},
    }
    write_params(root, params)
    p = load_params(root / "params.yaml")
    seen = set()
    for n in graph.nodes(p):
        direct: list = []
        record(monkeypatch, direct)
        try:
            n.call.run()
        except Stop:
            pass
        via_cli: list = []
        record(monkeypatch, via_cli)
        for argv in n.argv:
            res = CliRunner().invoke(app, list(argv))
            assert isinstance(res.exception, Stop) or res.exit_code == 0, (argv, res.output)
        assert via_cli == direct and direct, n.address
        seen.add(n.stage)
    assert seen == set(graph.STAGE_NAMES)


def test_a_stage_is_declared_once_and_the_rest_follows():
    """The flow's order, params.yaml's tracked sections and the stage functions all come from ``graph.STAGES``:
    a stage left out of one of them fails here, it is never dropped silently."""
    import importlib

    from steerkit.pipeline import plan
    from steerkit.pipeline.params import TRACKED

    assert set(plan.ORDER) == {s.name for s in graph.STAGES if not s.after_commit}
    assert plan.ORDER.index("derive") == 0  # reads no behavior: it runs beside the chains
    top = {s.section for s in graph.STAGES if s.section and not s.section.startswith("data.")}
    assert set(TRACKED) == top  # DVC refuses a params.yaml without a section dvc.yaml tracks
    shipped = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert top <= set(shipped)
    for s in graph.STAGES:
        fn = getattr(importlib.import_module(f"steerkit.stages.{s.name}"), s.name)
        assert callable(fn), s.name
        for cls in s.configs:  # its settings are spelled in params.yaml's words in its errors
            assert set(s.spelling("x")) >= set(cls.__dataclass_fields__), s.name
