"""Steered generation: the same prompts under several multipliers, greedy and batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .models import format_prompt, model_device
from .vector import SteeringVector, weighted_sum


@dataclass
class Generation:
    prompt: str
    multiplier: float
    text: str


def generate(
    model: nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48, system: str | None = None
) -> list[str]:
    """Greedy completions of chat-formatted prompts (left-padded batch)."""
    texts = [format_prompt(tokenizer, p, system) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    enc = {k: v.to(model_device(model)) for k, v in enc.items()}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)]


def steered_generations(
    model: nn.Module,
    tokenizer: Any,
    vectors: Sequence[SteeringVector],
    multipliers: Sequence[float],
    prompts: Sequence[str],
    max_new_tokens: int = 48,
    system: str | None = None,
    positions: str = "all",
) -> list[Generation]:
    """Every prompt under every multiplier of the (summed) vectors, added at ``positions``."""
    vector = vectors[0] if len(vectors) == 1 else weighted_sum(vectors)
    out: list[Generation] = []
    for m in multipliers:
        with vector.apply(model, m, positions):
            texts = generate(model, tokenizer, prompts, max_new_tokens, system)
        out += [Generation(p, float(m), t) for p, t in zip(prompts, texts)]
    return out
