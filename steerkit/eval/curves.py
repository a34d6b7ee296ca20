"""Steering curves over the multiplier m, each from batched forward passes under ``vector.apply``.

* ``margin_curve``: log p(matching) − log p(not matching) of the two free-text answers (one packed
  forward per batch scores both answers of every pair), its length-normalised form and the
  share of pairs the model prefers the matching answer for;
* ``perplexity_curve``: perplexity of neutral text, i.e. the fluency cost of steering;
* ``open_ended_curve``: greedy answers to held-out questions, scored by a judge.

The A/B letter-choice curve is in ``ab``; ``report`` runs them all into one report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..config import as_float
from ..data.pairs import ContrastivePair
from ..errors import DataError, VectorError
from ..generate import steered_generations
from ..models import model_device, pad_token_id
from ..packing import (
    check_batch_size,
    chunked,
    encode_pairs,
    pack,
    right_pad,
    segment_counts,
    segment_logps,
)
from ..vector import SteeringVector
from .judges import Judge
from .metrics import per_pair
from .scoring import Batch, Runner


def as_multipliers(multipliers: Sequence[Any]) -> list[float]:
    """Finite floats, deduplicated and sorted (curves are read left to right)."""
    values = sorted({as_float(m) for m in multipliers})
    if not values:
        raise VectorError("no multipliers given", where="multiplier", fix="pass at least one, e.g. -2 0 2")
    return values


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def value_at(rows: Sequence[dict], key: str, m: float) -> float | None:
    return next((r[key] for r in rows if r["multiplier"] == m), None)


def swing(rows: Sequence[dict], key: str) -> float | None:
    """``key`` at the largest multiplier minus ``key`` at the smallest (None if not computed)."""
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        return None
    lo, hi = min(rows, key=lambda r: r["multiplier"]), max(rows, key=lambda r: r["multiplier"])
    return float(hi[key] - lo[key])


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den`` of two effects (retention, kept-when-composed); None when either is missing or den is 0."""
    if num is None or den is None or den == 0 or not (math.isfinite(num) and math.isfinite(den)):
        return None
    return float(num / den)


def pair_runner(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastivePair],
    batch_size: int = 8,
    system: str | None = None,
    cached: bool = True,
) -> tuple[Runner, torch.Tensor, torch.Tensor]:
    """Pairs encoded and packed once (similar lengths together), and each pair's answer lengths in tokens.

    Positions up to the end of the prompt are prompt; both answers are what would be generated.
    """
    check_batch_size(batch_size)
    if not pairs:
        raise DataError("no test pairs to evaluate", fix="pass a non-empty test file")
    max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    enc = encode_pairs(tokenizer, pairs, system=system, max_length=max_len)
    device, dtype = model_device(model), next(model.parameters()).dtype
    order = sorted(range(len(enc)), key=lambda i: enc[i].packed_length)  # similar lengths: less padding
    batches, n_pos, n_neg = [], torch.zeros(len(enc), dtype=torch.float64), torch.zeros(len(enc), dtype=torch.float64)
    for idx in chunked(order, batch_size):
        packed = pack([enc[i] for i in idx], pad_token_id(tokenizer), dtype).to(device)
        prompt = torch.zeros(packed.input_ids.shape, dtype=torch.bool, device=device)
        for row, i in enumerate(idx):
            prompt[row, : len(enc[i].prompt)] = True
        batches.append(Batch(idx, packed.input_ids, packed.attention_mask, prompt, packed.position_ids, packed))
        cp, cq = segment_counts(packed)
        n_pos[idx], n_neg[idx] = cp.double(), cq.double()
    return Runner(model, batches, cached), n_pos, n_neg


def answer_logps(runner: Runner, finals: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ log p of each pair's matching and not-matching answer (input order, float64) from the final hidden states."""
    head = runner.model.get_output_embeddings()
    n = sum(len(b.idx) for b in runner.batches)
    pos, neg = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    with torch.no_grad():
        for b, final in zip(runner.batches, finals):
            p, q = segment_logps(head(final[b.packed.pred_b, b.packed.pred_pos]), b.packed)
            pos[b.idx], neg[b.idx] = p.double().cpu(), q.double().cpu()
    return pos, neg


def margin_curve(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastivePair],
    vector: SteeringVector,
    multipliers: Sequence[float],
    batch_size: int = 8,
    system: str | None = None,
    positions: str = "all",
    cached: bool = True,
    runner: tuple[Runner, torch.Tensor, torch.Tensor] | None = None,
) -> list[dict]:
    """Mean answer log-prob margin, its per-token form and the win fraction, per multiplier.

    Pairs are encoded and packed once (pass ``runner`` from :func:`pair_runner` to share them, and the
    cached stream, between vectors); each multiplier then costs the layers after the steered one.
    Each row keeps the per-pair values it averages (``margins``, ``margins_per_token``, in input
    order): every swing and its interval is computed from them (``steerkit.eval.metrics``).
    """
    mults = as_multipliers(multipliers)
    run, n_pos, n_neg = runner or pair_runner(model, tokenizer, pairs, batch_size, system, cached)
    rows = []
    for m, finals in run.finals_many(vector, mults, positions).items():
        pos, neg = answer_logps(run, finals)
        margin, per_token = pos - neg, pos / n_pos - neg / n_neg
        rows.append(
            {
                "multiplier": m,
                "margin": float(margin.mean()),
                "margin_per_token": float(per_token.mean()),
                "win_fraction": float((margin > 0).double().mean()),
                "margins": per_pair(margin.tolist()),
                "margins_per_token": per_pair(per_token.tolist()),
            }
        )
    return rows


def text_runner(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 8,
    cached: bool = True,
    prefix: str | None = None,
) -> Runner:
    """Plain texts (no chat template) right-padded in batches of similar length; every position is 'generated'.

    With ``prefix`` (e.g. a system prompt) each text follows it: the prefix is prompt and is not scored.
    """
    check_batch_size(batch_size)
    head = list(tokenizer(prefix + "\n\n")["input_ids"]) if prefix else []
    seqs = [head + list(tokenizer(t, add_special_tokens=not head)["input_ids"]) for t in texts]
    device = model_device(model)
    batches = []
    for idx in chunked(sorted(range(len(seqs)), key=lambda i: len(seqs[i])), batch_size):
        ids, mask = right_pad([seqs[i] for i in idx], pad_token_id(tokenizer))
        ids, mask = ids.to(device), mask.to(device)
        prompt = torch.zeros(ids.shape, dtype=torch.bool, device=device)
        prompt[:, : len(head)] = True
        batches.append(Batch(idx, ids, mask, prompt))
    return Runner(model, batches, cached)


def text_nlls(runner: Runner, finals: Sequence[torch.Tensor]) -> tuple[list[float], list[int]]:
    """Per text (input order): its summed next-token NLL and its number of predicted tokens.

    Only tokens after the prompt (prefix) are scored; the last prefix token predicts the first one.
    """
    head = runner.model.get_output_embeddings()
    n = sum(len(b.idx) for b in runner.batches)
    nlls, counts = [0.0] * n, [0] * n
    with torch.no_grad():
        for b, hidden in zip(runner.batches, finals):
            keep = (b.attention_mask[:, 1:] * b.attention_mask[:, :-1]).bool()  # the next token is a real token
            keep &= ~b.prompt[:, 1:]  # ... and it is text, not prefix
            logits = head(hidden[:, :-1][keep]).float()
            token_nll = torch.nn.functional.cross_entropy(logits, b.input_ids[:, 1:][keep], reduction="none")
            rows = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
            per_row = torch.zeros(keep.shape[0], dtype=torch.float64, device=keep.device)
            per_row.index_add_(0, rows, token_nll.double())
            for row, i in enumerate(b.idx):
                nlls[i], counts[i] = float(per_row[row]), int(keep[row].sum())
    return nlls, counts


def runner_nll(runner: Runner, finals: Sequence[torch.Tensor]) -> tuple[float, int]:
    """Summed next-token NLL over a text runner's texts given their final hidden states, and the token count."""
    nlls, counts = text_nlls(runner, finals)
    return float(sum(nlls)), int(sum(counts))


def text_nll(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 8) -> tuple[float, int]:
    """Summed next-token NLL over all texts and the number of predicted tokens (plain text, no template)."""
    runner = text_runner(model, tokenizer, texts, batch_size, cached=False)
    return runner_nll(runner, runner.plain())


def perplexity_curve(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    vector: SteeringVector,
    multipliers: Sequence[float],
    batch_size: int = 8,
    positions: str = "all",
    cached: bool = True,
    runner: Runner | None = None,
) -> list[dict]:
    """Perplexity of the texts under the steered model and fluency_cost = ppl(m)/ppl(0) − 1.

    Rows cover the requested multipliers plus 0 (the reference).
    """
    mults = as_multipliers([*multipliers, 0.0])
    if runner is None and not texts:
        raise DataError("no texts to measure perplexity on", fix="pass texts or use neutral_texts()")
    run = runner or text_runner(model, tokenizer, texts, batch_size, cached)
    rows: dict[float, dict] = {}
    for m, finals in run.finals_many(vector, mults, positions).items():
        rows[m] = perplexity_row(*text_nlls(run, finals), multiplier=m)
    for row in rows.values():
        row["fluency_cost"] = row["perplexity"] / rows[0.0]["perplexity"] - 1.0
    return [rows[m] for m in mults]


def perplexity_row(nlls: Sequence[float], tokens: Sequence[int], **keys: Any) -> dict[str, Any]:
    """The perplexity of texts from their per-text NLLs and token counts (kept in the row: the fluency cost's
    interval is resampled over the texts)."""
    if sum(tokens) == 0:
        raise DataError(
            "the texts have no token to predict (each is one token or empty)", fix="use paragraphs of several words"
        )
    return {**keys, "perplexity": math.exp(sum(nlls) / sum(tokens)), "nlls": per_pair(nlls), "tokens": list(tokens)}


def open_ended_curve(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastivePair],
    vector: SteeringVector,
    multipliers: Sequence[float],
    judge: Judge,
    n: int = 8,
    max_new_tokens: int = 40,
    system: str | None = None,
) -> dict[str, Any]:
    """Greedy answers to the first ``n`` questions under each multiplier, scored by ``judge``."""
    mults = as_multipliers(multipliers)
    chosen = list(pairs[: max(0, n)])
    if not chosen:
        return {
            "judge": judge.name,
            "curve": [{"multiplier": m, "judge_score": None} for m in mults],
            "generations": [],
        }
    prompts = [p.question for p in chosen]
    gens = steered_generations(model, tokenizer, [vector], mults, prompts, max_new_tokens, system)
    asked = [chosen[k % len(chosen)] for k in range(len(gens))]  # generations run prompt-fastest per multiplier
    if len(gens) != len(chosen) * len(mults) or any(g.prompt != p.question for g, p in zip(gens, asked)):
        raise DataError("generations do not line up with the questions asked", where="open-ended evaluation")
    scores = judge.score_many(asked, [g.text for g in gens])
    records = [
        {"id": p.id, "prompt": g.prompt, "multiplier": g.multiplier, "text": g.text, "score": float(s)}
        for p, g, s in zip(asked, gens, scores)
    ]
    curve = []
    for m in mults:
        scores = [r["score"] for r in records if r["multiplier"] == m]
        curve.append({"multiplier": m, "judge_score": mean(scores), "scores": per_pair(scores)})
    return {"judge": judge.name, "curve": curve, "generations": records}
