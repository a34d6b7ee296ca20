"""A real OpenAI-compatible server on loopback — llama-cpp-python's, serving the embedded model's own GGUF — as
the teacher that writes pairs from a description, and as the OpenAI judge of one evaluation.

Kept cheap: a handful of pairs, short answers; the server answers from the Q4_1 GGUF in llama.cpp.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from steerkit.cli import app

from ..conftest import LLAMA_ALIAS as ALIAS

pytestmark = pytest.mark.integration


def test_the_server_teaches_pairs_from_a_description(llama_server, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERKIT_TEACHER_BASE_URL", llama_server)
    monkeypatch.setenv("STEERKIT_TEACHER_MODEL", ALIAS)
    monkeypatch.setenv("STEERKIT_TEACHER_API_KEY", "sk-not-recorded")
    out = tmp_path / "pirate.jsonl"
    args = ["data", "generate", "pirate", "--describe", "talks like a pirate", "--pairs", "4", "--teacher", "openai"]
    res = CliRunner().invoke(app, [*args, "--max-new-tokens", "32", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 2 <= len(rows) <= 4 and all(r["question"] and r["matching"] and r["not_matching"] for r in rows)
    prov = json.loads((tmp_path / "pirate.generation.json").read_text())
    assert prov["teacher"] == {"kind": "openai", "model": ALIAS, "endpoint": llama_server}
    assert "sk-not-recorded" not in (tmp_path / "pirate.generation.json").read_text()  # never the key
    assert prov["description"] == "talks like a pirate" and prov["prompts"]["toward"] and prov["prompts"]["away"]
    assert prov["questions"]["asked"] >= 6 and sum(prov["dropped"].values()) + len(rows) >= 4
    assert not list(tmp_path.glob(".*journal*"))  # the finished run leaves no journal behind
    # `steerkit data prepare` reads what generate wrote, and keeps where it came from
    res = CliRunner().invoke(app, ["data", "prepare", "pirate", str(out), "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    source = json.loads((tmp_path / "data/pairs/pirate/source.json").read_text())
    assert source["generated"]["teacher"]["model"] == ALIAS


def test_the_server_judges_an_evaluation(llama_server, embedded, tmp_path, monkeypatch):
    from steerkit.stages.train import train_vector

    seed = os.path.join(os.path.dirname(__file__), "..", "..", "data", "seed", "power-seeking")
    vec, _ = train_vector(
        embedded, os.path.join(seed, "train.jsonl"), tmp_path / "L15.caa.safetensors", behavior="judged",
        method="caa", limit=8, progress=False,
    )  # fmt: skip
    monkeypatch.setenv("STEERKIT_JUDGE_BASE_URL", llama_server)
    monkeypatch.setenv("STEERKIT_JUDGE_MODEL", ALIAS)
    monkeypatch.setenv("STEERKIT_JUDGE_CONSTRAIN", "1")  # a 135M judge keeps to the rubric only when made to
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(
        app,
        [
            "evaluate", "-v", str(tmp_path / "L15.caa.safetensors"), "-t", os.path.join(seed, "test.jsonl"),
            "-x", "-1", "-x", "1", "--limit", "2", "--judge", "openai", "--n-open", "1", "--max-new-tokens", "12",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    judged = json.loads(out.read_text())["open_ended"]
    assert judged["judge"] == "openai" and len(judged["generations"]) == 2
    assert all(1.0 <= g["score"] <= 4.0 for g in judged["generations"])  # scored by the server, 1-4
