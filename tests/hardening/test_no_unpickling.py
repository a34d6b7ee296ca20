"""Untrusted files: no code path may unpickle.

Vector files, checkpoints, datasets and catalogs come from other people's repositories and
DVC remotes; unpickling one runs whatever code it holds. This scans every ``.py`` under
``steerkit/``, ``flows/``, ``benchmarks/`` and ``experiments/`` with ``ast`` and fails, naming
file:line, on ``torch.load`` without ``weights_only=True``, ``pickle``/``cPickle``/``_pickle``
``load(s)``/``Unpickler``, anything from ``dill``, ``joblib.load``, ``numpy.load(...,
allow_pickle=<not False>)``, ``pandas.read_pickle`` and ``shelve.open``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ..conftest import REPO

SCANNED = ("steerkit", "flows", "benchmarks", "experiments")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle"}
PICKLE_FUNCS = {"load", "loads", "Unpickler"}


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """``file:line: reason`` for every unpickling call in ``source`` (aliases and from-imports followed)."""
    tree = ast.parse(source, filename)
    modules: dict[str, str] = {}  # local name -> module ("np" -> "numpy")
    functions: dict[str, str] = {}  # local name -> "module.func" ("load" -> "pickle.load")
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] == "dill":
                    found.append(f"{filename}:{node.lineno}: imports dill (it unpickles)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            for a in node.names:
                functions[a.asname or a.name] = f"{node.module}.{a.name}"
            if root == "dill":
                found.append(f"{filename}:{node.lineno}: imports from dill (it unpickles)")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            qual = f"{modules.get(f.value.id, f.value.id)}.{f.attr}"
        elif isinstance(f, ast.Name) and f.id in functions:
            qual = functions[f.id]
        else:
            continue
        mod, _, func = qual.rpartition(".")
        where = f"{filename}:{node.lineno}"
        if mod == "torch" and func == "load" and not _is_const(_keyword(node, "weights_only"), True):
            found.append(f"{where}: torch.load without weights_only=True")
        elif mod in PICKLE_MODULES and func in PICKLE_FUNCS:
            found.append(f"{where}: {qual} unpickles")
        elif mod.split(".")[0] == "dill":
            found.append(f"{where}: {qual} (dill unpickles)")
        elif mod.split(".")[0] == "joblib" and func == "load":
            found.append(f"{where}: joblib.load unpickles")
        elif mod in ("numpy", "np") and func == "load":
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not _is_const(allow, False):
                found.append(f"{where}: numpy.load with allow_pickle")
        elif mod in ("pandas", "pd") and func == "read_pickle":
            found.append(f"{where}: pandas.read_pickle unpickles")
        elif mod == "shelve" and func == "open":
            found.append(f"{where}: shelve.open unpickles")
    return found


def _python_files() -> list[Path]:
    return sorted(
        p for d in SCANNED if (REPO / d).is_dir() for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts
    )


def test_the_scanner_catches_every_form():
    bad = """
import torch, pickle as pk, joblib, numpy as np, pandas as pd, shelve
from pickle import loads
from torch import load as tload
import dill
torch.load("f")
torch.load("f", weights_only=False)
tload("f")
pk.load(open("f", "rb"))
loads(b"")
joblib.load("f")
np.load("f", allow_pickle=True)
pd.read_pickle("f")
shelve.open("f")
dill.loads(b"")
"""
    ok = """
import torch, numpy as np, json
torch.load("f", weights_only=True)
np.load("f")
np.load("f", allow_pickle=False)
json.load(open("f"))
"""
    found = unsafe_calls(bad, "bad.py")
    assert [int(f.split(":")[1]) for f in found] == list(range(5, 16)), found
    assert unsafe_calls(ok, "ok.py") == []


def test_no_code_path_unpickles():
    files = _python_files()
    assert any(p.parts[-2] == "steerkit" for p in files), "nothing scanned: wrong repository root?"
    found = [hit for p in files for hit in unsafe_calls(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not found, "unpickling of untrusted files:\n" + "\n".join(found)
