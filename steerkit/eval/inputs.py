"""A test set's inputs for every curve, encoded once and shared by every vector evaluated on them.

The margin, A/B and fluency curves each read their own form of the held-out data (packed pairs,
multiple-choice prompts, neutral texts); under a system prompt (the prompt baseline) all three
carry it. Each keeps its cached stream, so BiPO, CAA at its norm and the stable release at the same
layer share one pass below the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..data.pairs import ContrastivePair
from ..models import pad_token_id
from .ab import ab_item, ab_runner, encode_ab
from .curves import pair_runner, text_runner
from .scoring import Runner


@dataclass
class Inputs:
    """The held-out pairs as packed pairs (margin), A/B prompts and the neutral texts, under one system prompt."""

    pairs: Sequence[ContrastivePair]
    margin: tuple
    ab: tuple
    texts: Runner
    system: str | None = None

    @classmethod
    def build(
        cls,
        model: nn.Module,
        tokenizer: Any,
        pairs: Sequence[ContrastivePair],
        texts: Sequence[str],
        batch_size: int = 8,
        system: str | None = None,
        cached: bool = True,
    ) -> Inputs:
        """Encode everything once; with ``system`` the pairs and A/B prompts carry it, and the texts follow it."""
        encoded = encode_ab(tokenizer, [ab_item(p) for p in pairs], system)
        return cls(
            pairs,
            pair_runner(model, tokenizer, pairs, batch_size, system, cached),
            (ab_runner(model, encoded, pad_token_id(tokenizer), batch_size, cached), encoded),
            text_runner(model, tokenizer, texts, batch_size, cached, prefix=system),
            system,
        )
