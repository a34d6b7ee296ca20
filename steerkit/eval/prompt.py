"""The prompt baseline: the model told to show the behavior (toward) or to avoid it (away), and no vector.

Public steering benchmarks (AxBench, Wu et al. 2025) find that a system prompt beats most steering
methods, so every evaluation measures it on the same held-out pairs, with the same code path (one
forward per batch, a system prompt instead of a vector) and the same metrics: margin, per-token
margin, win fraction, A/B, the judge where one is set, and the fluency cost. Its swing is toward −
away. It also measures the vector *with* the prompt: the away prompt at negative multipliers, the
toward prompt at positive ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..data.pairs import ContrastivePair
from ..data.prompts import Prompts
from ..vector import SteeringVector
from .ab import ab_curve
from .config import EvalConfig
from .curves import as_multipliers, margin_curve, open_ended_curve, runner_nll, swing
from .inputs import Inputs
from .judges import Judge

SIDES = ("away", "toward")
#: a margin-curve column and the name of its swing in every summary (the vector's, CAA's, the prompt's)
METRICS = {"margin": "margin_swing", "margin_per_token": "margin_per_token_swing", "win_fraction": "win_swing"}


def _ppl(inputs: Inputs, vector: SteeringVector | None, m: float) -> float:
    runner = inputs.texts
    finals = runner.plain() if vector is None or m == 0 else runner.finals(vector, m)
    nll, n = runner_nll(runner, finals)
    return math.exp(nll / n)


def prompted_inputs(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastivePair],
    texts: Sequence[str],
    prompts: Prompts,
    cfg: EvalConfig,
    cached: bool = True,
) -> dict[str, Inputs]:
    """The held-out inputs under each prompt (away, toward), encoded once."""
    return {
        side: Inputs.build(model, tokenizer, pairs, texts, cfg.batch_size, getattr(prompts, side), cached)
        for side in SIDES
    }


def prompt_baseline(
    model: nn.Module,
    tokenizer: Any,
    vector: SteeringVector,
    sides: dict[str, Inputs],
    plain_ppl: float,
    cfg: EvalConfig,
    judge: Judge | None,
) -> dict[str, Any]:
    """Each prompt's curves at m = 0 (``vector`` only names the layer whose stream is cached) and their swings."""
    rows: dict[str, Any] = {"margin": [], "ab": [], "perplexity": [], "open_ended": []}
    for side in SIDES:
        inputs = sides[side]
        (margin,) = margin_curve(model, tokenizer, inputs.pairs, vector, [0.0], runner=inputs.margin)
        (ab,) = ab_curve(model, tokenizer, inputs.pairs, vector, [0.0], runner=inputs.ab)
        ppl = _ppl(inputs, None, 0.0)
        rows["margin"].append({"prompt": side, **margin})
        rows["ab"].append({"prompt": side, **ab})
        rows["perplexity"].append({"prompt": side, "perplexity": ppl, "fluency_cost": ppl / plain_ppl - 1.0})
        if judge is not None and cfg.n_open > 0:
            judged = open_ended_curve(
                model, tokenizer, inputs.pairs, vector, [0.0], judge, cfg.n_open, cfg.max_new_tokens, inputs.system
            )
            rows["open_ended"].append({"prompt": side, "judge_score": judged["curve"][0]["judge_score"]})
    away, toward = ({k: rows[k][i] for k in rows if rows[k]} for i in (0, 1))
    summary = {name: toward["margin"][k] - away["margin"][k] for k, name in METRICS.items()}
    summary["ab_swing"] = toward["ab"]["p_matching"] - away["ab"]["p_matching"]
    summary["judge_swing"] = (
        toward["open_ended"]["judge_score"] - away["open_ended"]["judge_score"] if rows["open_ended"] else None
    )
    summary["fluency_cost"] = max(r["fluency_cost"] for r in rows["perplexity"])
    return {"toward": sides["toward"].system, "away": sides["away"].system, **rows, "summary": summary}


def with_prompt(
    model: nn.Module,
    tokenizer: Any,
    vector: SteeringVector,
    sides: dict[str, Inputs],
    plain_ppl: float,
    cfg: EvalConfig,
    judge: Judge | None,
) -> dict[str, Any]:
    """The vector together with the prompt: away prompt at m < 0, toward prompt at m > 0."""
    mults = [m for m in as_multipliers(cfg.multipliers) if m != 0]
    lows, highs = [m for m in mults if m < 0], [m for m in mults if m > 0]
    margin, ab = [], []
    for side, ms in (("away", lows), ("toward", highs)):
        inputs = sides[side]
        if ms:
            margin += [
                {"prompt": side, **r}
                for r in margin_curve(model, tokenizer, inputs.pairs, vector, ms, runner=inputs.margin)
            ]
            ab += [
                {"prompt": side, **r} for r in ab_curve(model, tokenizer, inputs.pairs, vector, ms, runner=inputs.ab)
            ]
    fluency = [
        {"multiplier": m, "prompt": side, "fluency_cost": _ppl(sides[side], vector, m) / plain_ppl - 1.0}
        for side, m in (("away", -1.0), ("toward", 1.0))
    ]
    judged = None
    if judge is not None and cfg.n_open > 0 and lows and highs:
        ends = [(side, m) for side, m in (("away", min(lows)), ("toward", max(highs)))]
        judged = [
            {
                "multiplier": m,
                "prompt": side,
                **open_ended_curve(
                    model,
                    tokenizer,
                    sides[side].pairs,
                    vector,
                    [m],
                    judge,
                    cfg.n_open,
                    cfg.max_new_tokens,
                    sides[side].system,
                )["curve"][0],
            }
            for side, m in ends
        ]
    summary = {name: swing(margin, k) for k, name in METRICS.items()}
    summary["ab_swing"] = swing(ab, "p_matching")
    summary["judge_swing"] = swing(judged, "judge_score") if judged else None
    summary["fluency_cost_at_1"] = max(r["fluency_cost"] for r in fluency)
    return {"margin": margin, "ab": ab, "perplexity": fluency, "open_ended": judged, "summary": summary}


def comparison(report: dict[str, Any]) -> list[dict[str, Any]]:
    """BiPO, CAA at its norm, the prompt and BiPO + prompt, side by side (what the gate and RESULTS.md read)."""
    keys = ("margin_swing", "margin_per_token_swing", "win_swing", "ab_swing", "judge_swing")
    rows = []
    for name, part, cost in (
        ("vector", report, "fluency_cost_at_1"),
        ("caa", report.get("baseline"), "fluency_cost_at_1"),
        ("prompt", report.get("prompt"), "fluency_cost"),
        ("vector+prompt", report.get("vector_with_prompt"), "fluency_cost_at_1"),
    ):
        if part:
            s = part["summary"]
            rows.append({"method": name, **{k: s.get(k) for k in keys}, "fluency_cost": s.get(cost)})
    return rows
