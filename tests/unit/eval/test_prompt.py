"""The prompt baseline: the same code path as the vectors (one forward per batch, a system prompt instead of a
vector), its swing toward − away, the vector together with the prompt, and the four side by side."""

from __future__ import annotations

import json

import pytest
import torch

from steerkit.data.prompts import Prompts, builtin, prompts_for
from steerkit.errors import DataError
from steerkit.eval.ab import ab_curve
from steerkit.eval.config import EvalConfig
from steerkit.eval.curves import margin_curve
from steerkit.eval.report import evaluate_vector, render_png
from steerkit.vector import SteeringVector

from ...conftest import TinyTokenizer, random_pairs, tiny_model

TEXTS = ["the cat sat on the mat", "a plain sentence with some words in it"]
PROMPTS = Prompts(toward="say aaa always", away="never say aaa")


def test_prompt_baseline_is_the_margin_under_each_system_prompt():
    model, tok = tiny_model("llama"), TinyTokenizer()
    pairs = random_pairs(6)
    vec = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(1))}, {"method": "bipo"})
    report = evaluate_vector(model, tok, vec, pairs, EvalConfig(multipliers=(-1, 0, 1)), texts=TEXTS, prompts=PROMPTS)
    json.dumps(report, allow_nan=False)
    prompt = report["prompt"]
    assert (prompt["toward"], prompt["away"]) == (PROMPTS.toward, PROMPTS.away)
    for row in prompt["margin"]:  # the plain margin curve with that system prompt, unsteered: the same numbers
        (want,) = margin_curve(model, tok, pairs, vec, [0], system=getattr(PROMPTS, row["prompt"]), cached=False)
        assert row["margin"] == pytest.approx(want["margin"], rel=1e-5)
    toward, away = (next(r for r in prompt["margin"] if r["prompt"] == s) for s in ("toward", "away"))
    assert prompt["summary"]["margin_swing"] == pytest.approx(toward["margin"] - away["margin"])
    (ab_toward,) = ab_curve(model, tok, pairs, vec, [0], system=PROMPTS.toward, cached=False)
    assert next(r for r in prompt["ab"] if r["prompt"] == "toward")["p_matching"] == pytest.approx(
        ab_toward["p_matching"]
    )
    # the vector with the prompt: away at m < 0, toward at m > 0
    combined = report["vector_with_prompt"]
    assert [(r["multiplier"], r["prompt"]) for r in combined["margin"]] == [(-1.0, "away"), (1.0, "toward")]
    (hi,) = margin_curve(model, tok, pairs, vec, [1], system=PROMPTS.toward, cached=False)
    assert combined["margin"][1]["margin"] == pytest.approx(hi["margin"], rel=1e-4)
    assert [r["method"] for r in report["comparison"]] == ["vector", "prompt", "vector+prompt"]
    for row in report["comparison"]:  # the same metrics under the same names for every method
        assert all(isinstance(row[k], float) for k in ("margin_swing", "margin_per_token_swing", "win_swing")), row
    assert prompt["summary"]["win_swing"] == pytest.approx(toward["win_fraction"] - away["win_fraction"])
    assert render_png(report)[:4] == b"\x89PNG"
    # the fluency rows through the stream cache (the prompt's pass reused by the vector with the prompt) equal the
    # full model's at every row
    full = evaluate_vector(model, tok, vec, pairs, EvalConfig(multipliers=(-1, 0, 1)), texts=TEXTS, prompts=PROMPTS,
                           cached=False)  # fmt: skip
    for part in ("prompt", "vector_with_prompt"):
        got = [(r["prompt"], r["multiplier"], r["perplexity"]) for r in report[part]["perplexity"]]
        want = [
            (r["prompt"], r["multiplier"], pytest.approx(r["perplexity"], rel=1e-5)) for r in full[part]["perplexity"]
        ]
        assert got == want and len(got) == 2


def test_shipped_prompts_cover_the_seed_and_paper_behaviors():
    assert {"power-seeking", "wealth-seeking", "hallucination", "jailbreak", "truthfulness"} <= set(builtin())
    assert prompts_for("bipo-power-seeking") == prompts_for("power-seeking")
    assert prompts_for("sycophancy") is None
    assert prompts_for("x", "a", "b") == Prompts("a", "b")
    with pytest.raises(DataError, match="both prompts"):
        prompts_for("power-seeking", toward="only one")
