"""A behavior from a description, end to end: `steerkit pipeline add` puts it in params.yaml (comments kept) and
dvc.yaml in step; the flow has a teacher — the real OpenAI-compatible server on loopback — write its pairs, then
trains, evaluates (against the very prompts that made the data) and gates it on the tiny model; a second run
regenerates nothing, under the flow and DVC alike."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from ..conftest import LLAMA_ALIAS
from .conftest import dvc_status, load_flows, make_project, write_params

pytestmark = pytest.mark.integration  # the teacher is the embedded model's GGUF, served by llama.cpp

B = "pirate"


def test_a_description_becomes_a_gated_vector_and_a_second_run_regenerates_nothing(
    tmp_path, tiny_model_dir, prefect_api, llama_server, monkeypatch
):
    from steerkit.cli import app

    root = make_project(tmp_path / "proj", tiny_model_dir)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["behaviors"] = {"power-seeking": params["behaviors"]["power-seeking"]}  # one curated behavior beside it
    params["combos"] = {}
    write_params(root, params)
    (root / "params.yaml").write_text(
        "# the team's note, kept by `pipeline add`\n" + (root / "params.yaml").read_text()
    )
    monkeypatch.chdir(root)
    monkeypatch.setenv("STEERKIT_TEACHER_BASE_URL", llama_server)
    monkeypatch.setenv("STEERKIT_TEACHER_MODEL", LLAMA_ALIAS)
    res = CliRunner().invoke(
        app,
        ["pipeline", "add", B, "--describe", "talks like a pirate", "--pairs", "6", "--teacher", "openai"],
    )
    assert res.exit_code == 0, res.output
    text = (root / "params.yaml").read_text()
    assert text.startswith("# the team's note") and "talks like a pirate" in text
    assert f"generate@{B}" in set(dvc_status(root))  # dvc.yaml in step: DVC sees the new stage

    flows = load_flows(root)
    summary = flows.run_pipeline(root=str(root), retries=0)
    assert summary["ok"], summary["message"]
    row = next(r for r in summary["rows"] if r["behavior"] == B)
    assert row["stages"]["generate"] == "ran" and row["stages"]["gate"] == "ran"
    assert row["gate"]["decision"] in ("promote", "hold", "inconclusive")
    prov = json.loads((root / f"data/generated/{B}/generation.json").read_text())
    assert prov["teacher"]["model"] == LLAMA_ALIAS and prov["description"] == "talks like a pirate"
    report = json.loads((root / f"reports/eval/tiny-llama/{B}.json").read_text())
    assert (report["prompt"]["toward"], report["prompt"]["away"]) == (
        prov["prompts"]["toward"],
        prov["prompts"]["away"],
    )
    catalog = json.loads((root / "vectors/catalog.json").read_text())
    entry = next(e for e in catalog["entries"] if e["behavior"] == B and e["method"] == "bipo")
    assert entry["generated"]["description"] == "talks like a pirate"
    assert entry["generated"]["teacher"]["model"] == LLAMA_ALIAS
    assert dvc_status(root) == {}

    again = flows.run_pipeline(root=str(root), retries=0)
    assert again["ok"] and "0 stage(s) ran" in again["message"]  # an unchanged description regenerates nothing
