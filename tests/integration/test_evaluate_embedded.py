"""`steerkit evaluate` end to end on the embedded SmolLM2-135M model with a quick CAA vector."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.stages.train import train_vector
from steerkit.train.config import BipoConfig

from ..conftest import REPO

pytestmark = pytest.mark.integration
SEED = REPO / "data" / "seed" / "power-seeking"
B = "seeded-power"  # a name without built-in prompts: no prompt baseline, half the evaluation's cost


def test_cli_evaluate_caa_vector_on_held_out_pairs(embedded, tmp_path, monkeypatch):
    vec_path = tmp_path / "vectors" / "L15.caa.safetensors"
    vec, _ = train_vector(
        embedded,
        SEED / "train.jsonl",
        vec_path,
        behavior=B,
        method="caa",
        cfg=BipoConfig(layer=15),
        limit=8,
        progress=False,
    )
    assert vec.meta["method"] == "caa" and vec.norm() > 0
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join((REPO / "steerkit/data/neutral.txt").read_text().splitlines()[:3]) + "\n")
    monkeypatch.chdir(tmp_path)  # the default --out is relative to the working directory
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--vector",
            str(vec_path),
            "--test",
            str(SEED / "test.jsonl"),
            "-x",
            "2",
            "-x",
            "-2",
            "-x",
            "0",
            "--limit",
            "4",
            "--texts",
            str(texts),
            "--judge",
            "embedding",
            "--n-open",
            "1",
            "--max-new-tokens",
            "16",
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports" / "eval" / "smollm2-135m-instruct" / f"{B}.caa.json"
    png = out.with_suffix(".png")
    assert str(out.relative_to(tmp_path)) in res.output.replace("\n", "")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    report = json.loads(out.read_text())
    assert report["n_test"] == 4 and report["multipliers"] == [-2.0, 0.0, 2.0]
    assert report["vector"]["method"] == "caa" and report["vector"]["layer"] == 15
    margin = {r["multiplier"]: r["margin"] for r in report["margin"]}
    assert margin[2.0] > margin[0.0] > margin[-2.0]
    assert report["summary"]["margin_swing"] > 0 and report["summary"]["win_swing"] >= 0
    assert all(0 <= r["p_matching"] <= 1 for r in report["ab"])
    fluency = {r["multiplier"]: r["fluency_cost"] for r in report["perplexity"]}
    assert fluency[0.0] == 0.0 and set(fluency) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    gens = report["open_ended"]["generations"]
    assert report["open_ended"]["judge"] == "embedding" and len(gens) == 3
    assert all(-2.0 <= g["score"] <= 2.0 and g["text"] for g in gens)
