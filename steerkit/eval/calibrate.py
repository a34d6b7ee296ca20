"""Choose a layer (and learning rate / epochs) on a validation split, and a safe multiplier range.

A candidate is trained with the fast BiPO engine and scored by its validation margin swing
between m = −1 and m = +1; candidates whose fluency cost at |m| = 1 is 10% or more are not
eligible. The safe range is the largest |m| (from a ladder) whose fluency cost stays under 10%
in both directions. Both go into the chosen vector's metadata.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..data.pairs import ContrastivePair
from ..data.texts import neutral_texts
from ..errors import TrainingError
from ..packing import encode_pairs
from ..train import bipo
from ..train.config import BipoConfig
from ..vector import SteeringVector
from .curves import margin_curve, perplexity_curve

MAX_FLUENCY_COST = 0.10
LADDER = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def safe_multiplier(
    model: nn.Module,
    tokenizer: Any,
    vector: SteeringVector,
    texts: Sequence[str],
    ladder: Sequence[float] = LADDER,
    max_cost: float = MAX_FLUENCY_COST,
) -> float:
    """Largest |m| on the ladder whose fluency cost at +m and −m is below ``max_cost`` (0 if none)."""
    best = 0.0
    for m in sorted(ladder):
        rows = perplexity_curve(model, tokenizer, texts, vector, [-m, m])
        if max(r["fluency_cost"] for r in rows if r["multiplier"] != 0) >= max_cost:
            break
        best = m
    return best


@dataclass
class Candidate:
    layer: int
    lr: float
    epochs: int
    # measured on the validation split at m = ±1 (not the held-out evaluation's swing over its multipliers)
    val_margin_swing_at_1: float = float("nan")
    val_win_swing_at_1: float = float("nan")
    fluency_cost_at_1: float = float("nan")
    eligible: bool = False
    norm: float = float("nan")
    seconds: float = 0.0


@dataclass
class Calibration:
    candidates: list[Candidate]
    best: Candidate
    safe_multiplier: float
    vector: SteeringVector = field(repr=False)

    def table(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.candidates]


def calibrate(
    model: nn.Module,
    tokenizer: Any,
    train: Sequence[ContrastivePair],
    val: Sequence[ContrastivePair],
    *,
    layers: Sequence[int],
    lrs: Sequence[float] = (5e-3,),
    epochs: Sequence[int] = (3,),
    budget_s: float | None = None,
    base: BipoConfig | None = None,
    model_name: str = "?",
    texts: Sequence[str] | None = None,
    progress: bool = False,
) -> Calibration:
    """Train every (layer, lr, epochs) candidate within the time budget and keep the best eligible one.

    A layer's candidates are trained together (``bipo.train_many``: one pass of the model per step for
    all of them, each equal to its solo run); the budget is checked between layers.
    """
    if not train or not val:
        raise TrainingError(
            "calibration needs training and validation pairs",
            fix="split the training data, e.g. `steerkit data prepare` then use part of train",
        )
    base = base or BipoConfig()
    texts = list(texts) if texts is not None else neutral_texts()
    enc = encode_pairs(tokenizer, train)
    pad = tokenizer.pad_token_id
    t0 = time.perf_counter()
    done: list[tuple[Candidate, SteeringVector]] = []
    for layer in layers:  # the (lr, epochs) candidates of one layer train together, in one pass
        if budget_s is not None and done and time.perf_counter() - t0 > budget_s:
            break
        grid = list(itertools.product(lrs, epochs))
        jobs = [bipo.Job(enc, dataclasses.replace(base, layer=layer, lr=lr, epochs=ep)) for lr, ep in grid]
        t = time.perf_counter()
        results = bipo.train_many(model, jobs, pad, model_name=model_name, progress=progress)
        seconds = (time.perf_counter() - t) / len(jobs)
        for (lr, ep), res in zip(grid, results):
            vec = res.vector
            cand = Candidate(layer, lr, ep, seconds=round(seconds, 1), norm=vec.norm())
            curve = {r["multiplier"]: r for r in margin_curve(model, tokenizer, val, vec, [-1.0, 1.0])}
            cand.val_margin_swing_at_1 = curve[1.0]["margin"] - curve[-1.0]["margin"]
            cand.val_win_swing_at_1 = curve[1.0]["win_fraction"] - curve[-1.0]["win_fraction"]
            ppl = perplexity_curve(model, tokenizer, texts, vec, [-1.0, 1.0])
            cand.fluency_cost_at_1 = max(r["fluency_cost"] for r in ppl if r["multiplier"] != 0)
            cand.eligible = cand.fluency_cost_at_1 < MAX_FLUENCY_COST
            done.append((cand, vec))
    eligible = [d for d in done if d[0].eligible] or done
    best, vec = max(eligible, key=lambda d: d[0].val_margin_swing_at_1)
    safe = safe_multiplier(model, tokenizer, vec, texts)
    vec.meta["safe_multipliers"] = [-safe, safe]
    vec.meta["calibration"] = {
        "chosen": asdict(best),
        "candidates": [asdict(c) for c, _ in done],
        "n_train": len(train),
        "n_val": len(val),
        "max_fluency_cost": MAX_FLUENCY_COST,
    }
    return Calibration([c for c, _ in done], best, safe, vec)
