"""The prompt baseline: the model told to show the behavior (toward) or to avoid it (away), and no vector.

Public steering benchmarks (AxBench, Wu et al. 2025) find that a system prompt beats most steering
methods, so every evaluation measures it on the same held-out pairs, with the same code path (one
forward per batch, a system prompt instead of a vector) and the same metrics: margin, per-token
margin, win fraction, A/B, the judge where one is set, and the fluency cost. Its swing is toward −
away. It also measures the vector *with* the prompt: the away prompt at negative multipliers, the
toward prompt at positive ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..data.pairs import ContrastivePair
from ..data.prompts import Prompts
from ..vector import SteeringVector
from .ab import ab_curve
from .config import EvalConfig
from .curves import as_multipliers, margin_curve, open_ended_curve, perplexity_row, text_nlls
from .inputs import Inputs
from .judges import Judge
from .metrics import SWINGS, comparison_row, summarize

SIDES = ("away", "toward")


def _ppl_row(inputs: Inputs, vector: SteeringVector, m: float, plain: dict[str, Any], **keys: Any) -> dict:
    """The perplexity of the neutral texts under ``inputs``' prompt and ``vector`` at ``m``, against ``plain``.

    At m = 0 it is the prompt alone, from the pass that also caches the stream at ``vector``'s layer (which
    the vector-with-prompt rows then start from)."""
    runner = inputs.texts
    row = perplexity_row(*text_nlls(runner, runner.finals(vector, m)), multiplier=m, **keys)
    row["fluency_cost"] = row["perplexity"] / plain["perplexity"] - 1.0
    return row


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
    plain: dict[str, Any],
    cfg: EvalConfig,
    judge: Judge | None,
) -> dict[str, Any]:
    """Each prompt's curves at m = 0 (``vector`` only names the layer whose stream is cached) and their swings.

    ``plain``: the unsteered perplexity row without a prompt (the fluency cost's reference).
    """
    rows: dict[str, Any] = {"margin": [], "ab": [], "perplexity": [], "open_ended": []}
    for side in SIDES:
        inputs = sides[side]
        (margin,) = margin_curve(model, tokenizer, inputs.pairs, vector, [0.0], runner=inputs.margin)
        (ab,) = ab_curve(model, tokenizer, inputs.pairs, vector, [0.0], runner=inputs.ab)
        rows["margin"].append({"prompt": side, **margin})
        rows["ab"].append({"prompt": side, **ab})
        rows["perplexity"].append(_ppl_row(inputs, vector, 0.0, plain, prompt=side))
        if judge is not None and cfg.n_open > 0:
            judged = open_ended_curve(
                model, tokenizer, inputs.pairs, vector, [0.0], judge, cfg.n_open, cfg.max_new_tokens, inputs.system
            )
            rows["open_ended"].append({"prompt": side, **judged["curve"][0]})
    part = {"toward": sides["toward"].system, "away": sides["away"].system, **rows}
    summary = summarize(part, reference=plain)
    summary["fluency_cost"], summary["fluency_cost_ci95"] = (
        summary["fluency_cost_at_1"],
        summary["fluency_cost_at_1_ci95"],
    )
    return {**part, "summary": summary}


def with_prompt(
    model: nn.Module,
    tokenizer: Any,
    vector: SteeringVector,
    sides: dict[str, Inputs],
    plain: dict[str, Any],
    cfg: EvalConfig,
    judge: Judge | None,
) -> dict[str, Any]:
    """The vector together with the prompt: away prompt at m < 0, toward prompt at m > 0 (fluency against ``plain``)."""
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
    fluency = [_ppl_row(sides[side], vector, m, plain, prompt=side) for side, m in (("away", -1.0), ("toward", 1.0))]
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
    part = {"margin": margin, "ab": ab, "perplexity": fluency, "open_ended": judged}
    return {**part, "summary": summarize(part, reference=plain)}


#: the parts of an evaluation report, side by side: the name a person reads and the report key
PARTS = (("vector", None), ("caa", "baseline"), ("prompt", "prompt"), ("vector+prompt", "vector_with_prompt"))
#: the comparisons each report makes on the same pairs (a − b, paired)
PAIRED = (("vector", "caa"), ("vector", "prompt"), ("vector+prompt", "prompt"))


def _part(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    key = dict(PARTS)[name]
    return report if key is None else report.get(key)


def comparison(report: dict[str, Any]) -> list[dict[str, Any]]:
    """BiPO, CAA at its norm, the prompt and BiPO + prompt, side by side, each number with its interval."""
    rows = []
    for name, _ in PARTS:
        if part := _part(report, name):
            s = part["summary"]
            row = {"method": name}
            for k in (*SWINGS, "fluency_cost_at_1"):
                row[k], row[k + "_ci95"] = s.get(k), s.get(k + "_ci95")
            row["fluency_cost"], row["fluency_cost_ci95"] = row["fluency_cost_at_1"], row["fluency_cost_at_1_ci95"]
            rows.append(row)
    return rows


def paired_comparisons(report: dict[str, Any]) -> list[dict[str, Any]]:
    """vector − CAA, vector − prompt and vector + prompt − prompt, pair by pair on the same held-out pairs."""
    return [
        {"a": a, "b": b, **comparison_row(f"{a} − {b}", _part(report, a), _part(report, b))}
        for a, b in PAIRED
        if _part(report, a) and _part(report, b)
    ]
