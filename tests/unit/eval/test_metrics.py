"""One home for metrics: every reported number recomputes from the per-pair values its report keeps, and the
paired comparisons equal a plain reference computed pair by pair, one pair at a time, with the full model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from steerkit.data.prompts import Prompts
from steerkit.eval import metrics, stats
from steerkit.eval.config import EvalConfig
from steerkit.eval.curves import margin_curve
from steerkit.eval.report import evaluate_vector, scale_to_norm
from steerkit.vector import SteeringVector

from ...conftest import TinyTokenizer, random_pairs, tiny_model

TEXTS = ["the cat sat on the mat", "a plain sentence with some words in it", "more words, and then some more"]


@pytest.fixture(scope="module")
def evaluated():
    model, tok = tiny_model("llama"), TinyTokenizer()
    pairs = random_pairs(8)
    g = torch.Generator().manual_seed(4)
    vec = SteeringVector({1: torch.randn(32, generator=g)}, {"method": "bipo"})
    caa = SteeringVector({1: torch.randn(32, generator=g)}, {"method": "caa"})
    prompts = Prompts(toward="say aaa always", away="never say aaa")
    cfg = EvalConfig(multipliers=(-2, 0, 2))
    report = evaluate_vector(model, tok, vec, pairs, cfg, texts=TEXTS, compare=caa, prompts=prompts)
    return model, tok, pairs, vec, caa, prompts, report


def _plain_swings(model, tok, pairs, vec):
    """Reference: each pair alone, the full model (no cache, no packing with others), margin at each end."""
    out = []
    for p in pairs:
        rows = margin_curve(model, tok, [p], vec, [-2.0, 2.0], batch_size=1, cached=False)
        out.append(rows[-1]["margin"] - rows[0]["margin"])
    return np.array(out)


def test_every_swing_recomputes_from_the_kept_per_pair_values(evaluated):
    *_, report = evaluated
    report = json.loads(json.dumps(report))  # what a later reader has: the JSON
    for row in report["margin"]:
        assert len(row["margins"]) == report["n_test"]
        assert np.mean(row["margins"]) == pytest.approx(row["margin"])
        assert np.mean(np.array(row["margins"]) > 0) == pytest.approx(row["win_fraction"])
    for part in (report, report["baseline"], report["prompt"], report["vector_with_prompt"]):
        again = metrics.summarize(part, reference=next(r for r in report["perplexity"] if r["multiplier"] == 0))
        for name in (*metrics.SWINGS, "fluency_cost_at_1"):
            assert part["summary"][name] == again[name] and part["summary"][name + "_ci95"] == again[name + "_ci95"]
    s = report["summary"]
    lo, hi = s["margin_swing_ci95"]
    assert lo <= s["margin_swing"] <= hi and s["win_swing_ci95"] is not None


def test_paired_comparisons_equal_a_plain_pair_by_pair_reference(evaluated):
    model, tok, pairs, vec, caa, prompts, report = evaluated
    ours = metrics.swing_values("margin_swing", report)
    plain_vec = _plain_swings(model, tok, pairs, vec)
    assert ours == pytest.approx(plain_vec, rel=1e-4, abs=1e-5)
    plain_caa = _plain_swings(model, tok, pairs, scale_to_norm(caa, vec.norm()))
    row = next(r for r in report["paired"] if r["comparison"] == "vector − caa")
    want = stats.paired_difference(plain_vec, plain_caa)
    assert row["margin_swing"] == pytest.approx(want.value, rel=1e-4)
    assert row["margin_swing_ci95"] == pytest.approx(list(want.ci95), rel=1e-3, abs=1e-4) and row["n"] == len(pairs)
    # the prompt baseline's per-pair swing: toward − away at m = 0, each pair alone
    ref = []
    for p in pairs:
        (t,) = margin_curve(model, tok, [p], vec, [0.0], batch_size=1, system=prompts.toward, cached=False)
        (a,) = margin_curve(model, tok, [p], vec, [0.0], batch_size=1, system=prompts.away, cached=False)
        ref.append(t["margin"] - a["margin"])
    assert metrics.swing_values("margin_swing", report["prompt"]) == pytest.approx(np.array(ref), rel=1e-4, abs=1e-5)
    vp = next(r for r in report["paired"] if r["comparison"] == "vector − prompt")
    assert vp["margin_swing"] == pytest.approx(stats.paired_difference(plain_vec, ref).value, rel=1e-4, abs=1e-5)


def test_the_registry_names_every_summary_number(evaluated):
    *_, report = evaluated
    numbers = {k for k in report["summary"] if not k.endswith(metrics.CI) and k != "monotonic_margin"}
    assert numbers <= set(metrics.METRICS)
    assert all(k + metrics.CI in report["summary"] for k in numbers)
    for m in metrics.METRICS.values():
        assert m.label and m.unit and m.fmt and m.kind in ("swing", "fluency", "ratio") and m.doc
        assert (m.curve is not None) == (m.kind == "swing") and (m.of is not None) == (m.kind == "ratio")
    assert metrics.metric("margin_swing").show(11.38, [8.8, 14.1]) == "+11.38 [+8.80, +14.10]"
    assert metrics.metric("fluency_cost_at_1").show(0.024, None) == "2.4%" and metrics.metric("kept").show(None) == "—"
    assert metrics.metric("fluency_cost_at_1").better(0.01, 0.02) and metrics.metric("win_swing").better(0.3, 0.2)
    with pytest.raises(KeyError, match="known"):
        metrics.metric("nope")


def test_prompt_ends_are_away_then_toward_whatever_the_row_order():
    rows = [
        {"prompt": "toward", "multiplier": 0.0, "margins": [3.0, 1.0]},
        {"prompt": "away", "multiplier": 0.0, "margins": [1.0, 2.0]},
    ]
    assert metrics.swing_values("margin_swing", {"margin": rows}).tolist() == [2.0, -1.0]
    assert metrics.swing_values("margin_swing", {"margin": rows[:1]}) is None  # one end: no swing
