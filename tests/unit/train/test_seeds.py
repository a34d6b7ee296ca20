"""Training noise: K seeds in one pass equal their solo runs, the medoid ships and says why, the others are kept
out of the catalog's sight, the evaluation reports the spread of their swings and the gate reads their agreement."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from steerkit.catalog.build import vector_files
from steerkit.data.pairs import write_pairs_jsonl
from steerkit.data.readers import load_pairs
from steerkit.eval.config import EvalConfig
from steerkit.models import LoadedModel
from steerkit.packing import encode_pairs
from steerkit.stages.evaluate import evaluate
from steerkit.stages.train import train
from steerkit.train import bipo
from steerkit.train.config import BipoConfig
from steerkit.train.seeds import agreement, cosine, seed_paths
from steerkit.vector import SteeringVector

from ...conftest import TinyTokenizer, random_pairs, tiny_model

CFG = BipoConfig(layer=1, lr=0.02, epochs=2, warmup_steps=0, batch_size=4, seed=5)


def _v(*xs: float) -> SteeringVector:
    return SteeringVector({1: torch.tensor(xs, dtype=torch.float32)})


def test_agreement_ships_the_medoid_and_says_why():
    a, b, c = _v(1.0, 0.0), _v(0.9, 0.1), _v(0.0, 1.0)
    info = agreement([a, b, c], [0, 1, 2])
    assert info["shipped"] == 1  # b lies between a and c: closest to both on average
    assert info["min_cosine"] == pytest.approx(0.0) and info["cosines"][0][0] == 1.0
    assert "medoid" in info["why"] and len(info["norms"]) == 3
    assert cosine(a, _v(-2.0, 0.0)) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        agreement([a], [0])


def test_k_seeds_in_one_pass_equal_their_solo_runs_and_the_medoid_ships(tmp_path):
    lm = LoadedModel(tiny_model("llama"), TinyTokenizer(), "tiny", "test")
    pairs = random_pairs(12)
    write_pairs_jsonl(tmp_path / "train.jsonl", pairs)
    write_pairs_jsonl(tmp_path / "test.jsonl", random_pairs(6, seed=9))
    folder = tmp_path / "vectors" / "tiny" / "b"
    trained = train(tmp_path / "train.jsonl", folder, model=lm, behavior="b", cfg=CFG, seeds=3, root=tmp_path)
    shipped = trained.vectors["bipo"]
    info = shipped.meta["seeds"]
    assert info["seeds"] == [5, 6, 7] and info["shipped"] in (5, 6, 7)
    kept = {s: SteeringVector.load(p) for s, p in seed_paths(trained.files["bipo"], info["seeds"]).items()}
    assert torch.equal(kept[info["shipped"]].layers[1], shipped.layers[1])
    enc = encode_pairs(lm.tokenizer, load_pairs(tmp_path / "train.jsonl"))  # as written: whitespace normalised
    solo = bipo.train(lm.model, enc, dataclasses.replace(CFG, seed=6), 0, progress=False).vector
    assert torch.allclose(kept[6].layers[1], solo.layers[1], atol=1e-5)  # one pass = each seed alone
    # the catalog indexes the shipped vector and CAA only: the seeds are in a hidden folder
    assert sorted(p.name for p in vector_files(tmp_path)) == ["L1.caa.safetensors", "L1.safetensors"]
    res = evaluate(
        trained.files["bipo"], tmp_path / "test.jsonl", tmp_path / "eval.json", model=lm, cfg=EvalConfig(), texts=None
    )
    spread = res.report["seeds"]
    assert set(spread["swings"]) == {"5", "6", "7"} and spread["shipped"] == info["shipped"]
    assert spread["swing_range"][0] <= res.report["summary"]["margin_swing"] + 1e-9 <= spread["swing_range"][1] + 2e-9
    assert spread["min_cosine"] == pytest.approx(info["min_cosine"]) and spread["swing_sd"] >= 0
