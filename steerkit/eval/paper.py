"""The BiPO paper's behavior-specific measures: TruthfulQA MC1 accuracy and jailbreak refusal rate.

Both reuse the generic machinery: MC1 scores answer log-probabilities like the margin does,
refusal rate judges greedy generations with the refusal judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..forward import sequence_logps
from ..generate import generate
from ..models import format_prompt, stable_attention
from ..vector import SteeringVector
from .curves import as_multipliers
from .judges import refusal_rate


def mc1_accuracy_curve(
    model: nn.Module,
    tokenizer: Any,
    items: Sequence[dict],
    vector: SteeringVector,
    multipliers: Sequence[float],
    batch_size: int = 16,
    system: str | None = None,
) -> list[dict]:
    """Share of TruthfulQA MC1 items whose correct choice has the highest summed log-probability.

    ``items`` as read by ``steerkit.data.benchmarks.read_truthfulqa_mc``: question, choices, correct (index).
    """
    prompts, answers, owner = [], [], []
    for k, item in enumerate(items):
        prompt = tuple(
            tokenizer(format_prompt(tokenizer, item["question"], system), add_special_tokens=False)["input_ids"]
        )
        for choice in item["choices"]:
            prompts.append(prompt)
            answers.append(tuple(tokenizer(" " + choice, add_special_tokens=False)["input_ids"]))
            owner.append(k)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(answers[i]))
    rows = []
    for m in as_multipliers(multipliers):
        scores = torch.empty(len(prompts))
        with vector.apply(model, m), stable_attention(model), torch.no_grad():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                scores[idx] = (
                    sequence_logps(model, [prompts[i] for i in idx], [answers[i] for i in idx], tokenizer.pad_token_id)
                    .float()
                    .cpu()
                )
        correct, start = 0, 0
        for item in items:
            n = len(item["choices"])
            correct += int(int(torch.argmax(scores[start : start + n])) == item["correct"])
            start += n
        rows.append({"multiplier": m, "mc1_accuracy": correct / len(items)})
    return rows


def refusal_curve(
    model: nn.Module,
    tokenizer: Any,
    goals: Sequence[str],
    vector: SteeringVector,
    multipliers: Sequence[float],
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> list[dict]:
    """Refusal rate of greedy answers to harmful requests under each multiplier (refusal-phrase judge)."""
    rows = []
    for m in as_multipliers(multipliers):
        texts: list[str] = []
        with vector.apply(model, m):
            for s in range(0, len(goals), batch_size):
                texts += generate(model, tokenizer, list(goals[s : s + batch_size]), max_new_tokens=max_new_tokens)
        rows.append({"multiplier": m, "refusal_rate": refusal_rate(texts), "examples": texts[:3]})
    return rows
