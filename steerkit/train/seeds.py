"""Training noise: the same recipe trained with several seeds, how much their directions agree, which one ships.

BiPO's seed fixes the batch order and the direction d drawn per batch. Training K seeds in one pass
(``bipo.train_many``) shows whether a recipe's vector is a property of the data or of the seed: the
cosine between every two directions (1: the same direction) and, at evaluation, the spread of their
swings. The vector that ships is the **medoid**: the seed whose direction is, on average, closest to
the others' — the most typical outcome of the recipe, not the luckiest on the held-out set (choosing
by held-out swing would make the gate's numbers optimistic).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..vector import SteeringVector

#: the other seeds' vectors live beside the shipped one, in a hidden folder the catalog does not index
SEEDS_DIR = ".seeds"


def cosine(a: SteeringVector, b: SteeringVector) -> float:
    """Cosine between two vectors over all their layers (as one flat direction)."""
    x = torch.cat([a.layers[i].double().flatten() for i in sorted(a.layers)])
    y = torch.cat([b.layers[i].double().flatten() for i in sorted(b.layers)])
    den = float(x.norm() * y.norm())
    return float(x @ y) / den if den > 0 else 0.0


def agreement(vectors: Sequence[SteeringVector], seeds: Sequence[int]) -> dict[str, Any]:
    """Every pairwise cosine, the smallest, and the medoid seed that ships (with why). Pure."""
    if len(vectors) != len(seeds) or len(vectors) < 2:
        raise ValueError("agreement needs two or more vectors, one per seed")
    k = len(vectors)
    cos = [[1.0 if i == j else cosine(vectors[i], vectors[j]) for j in range(k)] for i in range(k)]
    mean_to_others = [sum(cos[i][j] for j in range(k) if j != i) / (k - 1) for i in range(k)]
    pick = max(range(k), key=lambda i: (mean_to_others[i], -i))  # ties: the lowest seed
    off = [cos[i][j] for i in range(k) for j in range(i + 1, k)]
    return {
        "seeds": list(seeds),
        "shipped": seeds[pick],
        "why": f"the medoid: its direction's mean cosine to the other seeds' is {mean_to_others[pick]:.3f}, "
        "the highest (the recipe's most typical vector, not the best on the held-out set)",
        "cosines": cos,
        "min_cosine": min(off),
        "mean_cosine": sum(off) / len(off),
        "norms": [v.norm() for v in vectors],
    }


def seed_paths(shipped: str | Path, seeds: Sequence[int]) -> dict[int, Path]:
    """Where each seed's vector is kept beside the shipped file (``.seeds/L15.seed3.safetensors``)."""
    shipped = Path(shipped)
    stem = shipped.name[: -len(".safetensors")] if shipped.name.endswith(".safetensors") else shipped.stem
    return {s: shipped.parent / SEEDS_DIR / f"{stem}.seed{s}.safetensors" for s in seeds}


def load_seeds(shipped: str | Path, vector: SteeringVector) -> dict[int, SteeringVector]:
    """The seeds' vectors the shipped ``vector`` records (``meta["seeds"]``) that are on disk beside it."""
    info = vector.meta.get("seeds")
    if not isinstance(info, dict) or not info.get("seeds"):
        return {}
    out = {}
    for s, path in seed_paths(shipped, info["seeds"]).items():
        if path.is_file():
            out[s] = SteeringVector.load(path)
    return out
