"""The release gate's statistics on the embedded SmolLM2-135M model, kept cheap (one BiPO pass of two seeds).

- the same recipe retrained with another seed, gated against the first as stable, is not held;
- the same vector at half its norm is held, with a paired interval that excludes stable;
- a held-out set too small to decide says inconclusive, with the pairs it would need.
"""

from __future__ import annotations

import dataclasses

import pytest

from steerkit.catalog.releases import History, promote
from steerkit.data.pairs import write_pairs_jsonl
from steerkit.data.readers import load_pairs
from steerkit.eval.config import EvalConfig, GateConfig
from steerkit.fileio import sha256_file
from steerkit.recipes import recipe_for
from steerkit.stages.evaluate import evaluate
from steerkit.stages.gate import gate
from steerkit.stages.train import train
from steerkit.train.seeds import seed_paths
from steerkit.vector import SteeringVector

from ..conftest import REPO

pytestmark = pytest.mark.integration
SEED = REPO / "data" / "seed" / "power-seeking"
B = "seeded-power"  # a name without built-in prompts: no prompt baseline, half the evaluation's cost
EVAL = EvalConfig(multipliers=(-2.0, 0.0, 2.0))


@pytest.fixture(scope="module")
def project(embedded, tmp_path_factory):
    """Two seeds of the embedded recipe (16 pairs, 3 epochs, a short warm-up; one pass); seed 0 released as stable."""
    root = tmp_path_factory.mktemp("gate")
    write_pairs_jsonl(root / "train.jsonl", load_pairs(SEED / "train.jsonl", 16))
    write_pairs_jsonl(root / "test.jsonl", load_pairs(SEED / "test.jsonl", 12))
    (root / "texts.txt").write_text("\n".join((REPO / "steerkit/data/neutral.txt").read_text().splitlines()[:4]) + "\n")
    cfg = dataclasses.replace(recipe_for(embedded.name).train, epochs=3, warmup_steps=2)
    folder = root / "vectors" / embedded.name / B
    trained = train(
        root / "train.jsonl", folder, model=embedded, behavior=B, cfg=cfg, seeds=2, baseline="none", root=root
    )
    shipped = trained.files["bipo"]
    assert trained.vectors["bipo"].meta["seeds"]["shipped"] == 0  # two seeds: a tie, the lower ships
    promote(
        root, B, embedded.name, "bipo", shipped.read_bytes(), "seed 0", "first", {}, sha256_file(root / "test.jsonl")
    )
    return root, shipped, seed_paths(shipped, [0, 1])


def _gate(embedded, root, candidate: SteeringVector, limit=None, **rules):
    path = root / "vectors" / embedded.name / B / "L15.safetensors"
    candidate.save(path)
    kw = {"model": embedded, "cfg": EVAL, "texts": root / "texts.txt", "limit": limit}
    evaluate(path, root / "test.jsonl", root / "eval.json", **kw)
    return gate(
        path, root / "test.jsonl", root / "eval.json", root / "gate.json", rules=GateConfig(**rules), root=root, **kw
    )


def _check(gated, name):
    return next(c for c in gated.report["checks"] if c["name"] == name)


def test_another_seed_is_not_a_regression(embedded, project):
    root, shipped, seeds = project
    other = SteeringVector.load(seeds[1])
    gated = _gate(embedded, root, other, beat_caa=False)
    vs = _check(gated, "not worse than stable")
    # measured: seed 1 − seed 0 = −0.04 [−0.08, +0.00] on a swing of +0.96 (12 short steps: seeds differ by ~4 %,
    # near the 5 % margin) → not held; inconclusive where the interval reaches past the margin
    assert gated.decision in ("promote", "inconclusive"), gated.report["reasons"]
    assert vs["outcome"] in ("pass", "unclear") and vs["ci95"][1] > vs["threshold"]


def test_half_the_norm_is_held_with_an_interval_that_excludes_stable(embedded, project):
    root, _, seeds = project
    half = SteeringVector.load(seeds[0]) * 0.5  # the stable release's own direction, at half its norm
    gated = _gate(embedded, root, half, beat_caa=False)
    vs = _check(gated, "not worse than stable")
    assert gated.decision == "hold" and vs["outcome"] == "fail"
    assert vs["ci95"][1] < vs["threshold"] < 0  # the whole interval of candidate − stable is below −δ


def test_too_few_pairs_to_decide_is_inconclusive_with_the_pairs_it_would_need(embedded, project):
    root, _, seeds = project
    slightly_weaker = SteeringVector.load(seeds[0]) * 0.96  # within the 5 % margin, but only 3 pairs to show it
    gated = _gate(embedded, root, slightly_weaker, limit=3, beat_caa=False)
    assert gated.decision == "inconclusive", gated.report["checks"]
    assert _check(gated, "not worse than stable")["outcome"] == "unclear"
    assert gated.report["pairs_needed"] > 3 and "held-out pairs would tell" in gated.report["reasons"][0]
    assert len(History.load(root).events) == 1  # the gate decides; it never releases
