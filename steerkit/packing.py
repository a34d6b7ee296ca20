"""Tokenise contrastive pairs and pack each one as a single sequence: prompt, matching, not matching.

Both responses share the prompt, so a pair is packed as ``[prompt | matching | not_matching]``
with an attention mask in which the non-matching tokens see the prompt but not the matching
answer, and position ids that restart after the prompt for each answer. One forward pass then
scores both answers exactly as two separate sequences would, with the prompt computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .data.pairs import ContrastivePair
from .errors import DataError
from .models import format_prompt


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair: the chat-formatted prompt and the two responses (with a leading space)."""

    prompt: tuple[int, ...]
    matching: tuple[int, ...]
    not_matching: tuple[int, ...]

    @property
    def packed_length(self) -> int:
        return len(self.prompt) + len(self.matching) + len(self.not_matching)


def encode_pair(tokenizer: Any, pair: ContrastivePair, system: str | None = None) -> EncodedPair:
    """Prompt through the chat template; each response tokenised on its own with a leading space."""
    prompt_text = format_prompt(tokenizer, pair.question, system)
    templated = bool(getattr(tokenizer, "chat_template", None))
    prompt = tokenizer(prompt_text, add_special_tokens=not templated)["input_ids"]
    pos = tokenizer(" " + pair.matching, add_special_tokens=False)["input_ids"]
    neg = tokenizer(" " + pair.not_matching, add_special_tokens=False)["input_ids"]
    return EncodedPair(tuple(prompt), tuple(pos), tuple(neg))


def encode_pairs(
    tokenizer: Any, pairs: Sequence[ContrastivePair], system: str | None = None, max_length: int | None = None
) -> list[EncodedPair]:
    """Encode every pair; a pair whose prompt + longer answer exceeds ``max_length`` is an error."""
    out = []
    for i, pair in enumerate(pairs):
        enc = encode_pair(tokenizer, pair, system)
        if not enc.matching or not enc.not_matching:
            raise DataError(
                "a response encodes to zero tokens",
                where=f"pair {pair.id or i}",
                fix="drop the pair or give it a non-empty response",
            )
        longest = len(enc.prompt) + max(len(enc.matching), len(enc.not_matching))
        if max_length is not None and longest > max_length:
            raise DataError(
                f"prompt + response is {longest} tokens, longer than the model's context of {max_length}",
                where=f"pair {pair.id or i}",
                fix="shorten the question/answers or drop the pair",
            )
        out.append(enc)
    return out


@dataclass
class PackedBatch:
    """Right-padded packed sequences and where each response token is predicted from.

    ``pred_b, pred_pos`` index the hidden state that predicts ``target``; ``segment`` is
    ``2*b`` for pair b's matching tokens and ``2*b+1`` for its non-matching tokens.
    """

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, 1, T, T] additive float mask (0 = attend)
    position_ids: torch.Tensor  # [B, T]
    lengths: list[int]
    pred_b: torch.Tensor  # [N]
    pred_pos: torch.Tensor  # [N]
    target: torch.Tensor  # [N]
    segment: torch.Tensor  # [N]
    n_pairs: int

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.lengths,
            self.pred_b.to(device),
            self.pred_pos.to(device),
            self.target.to(device),
            self.segment.to(device),
            self.n_pairs,
        )


def pack(
    pairs: Sequence[EncodedPair], pad_id: int, dtype: torch.dtype = torch.float32, pad_to: int | None = None
) -> PackedBatch:
    """Build one right-padded batch of packed pairs with its block-causal mask.

    ``pad_to``: round the length up to a multiple of it, so that a compiled step sees few shapes.
    """
    T = max(p.packed_length for p in pairs)
    if pad_to:
        T = -(-T // pad_to) * pad_to
    B = len(pairs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    allowed = torch.zeros((B, T, T), dtype=torch.bool)
    pred_b, pred_pos, target, segment = [], [], [], []
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for b, p in enumerate(pairs):
        P, C, R = len(p.prompt), len(p.matching), len(p.not_matching)
        L = P + C + R
        ids[b, :L] = torch.tensor(p.prompt + p.matching + p.not_matching)
        pos[b, : P + C] = torch.arange(P + C)
        pos[b, P + C : L] = torch.arange(P, P + R)
        allowed[b, : P + C, : P + C] = causal[: P + C, : P + C]  # prompt + matching: plain causal
        allowed[b, P + C : L, :P] = True  # non-matching sees the prompt...
        allowed[b, P + C : L, P + C : L] = causal[:R, :R]  # ...and itself, never the matching answer
        allowed[b, L:, :].fill_(False)
        allowed[b, torch.arange(L, T), torch.arange(L, T)] = True  # padding sees only itself (no NaN rows)
        # matching token at P+t is predicted from P+t-1; non-matching token t from P-1 (t=0) or P+C+t-1
        c_from = list(range(P - 1, P + C - 1))
        r_from = [P - 1] + list(range(P + C, P + C + R - 1))
        pred_b += [b] * (C + R)
        pred_pos += c_from + r_from
        target += list(p.matching) + list(p.not_matching)
        segment += [2 * b] * C + [2 * b + 1] * R
    mask = torch.zeros((B, 1, T, T), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return PackedBatch(
        ids,
        mask,
        pos,
        [p.packed_length for p in pairs],
        torch.tensor(pred_b),
        torch.tensor(pred_pos),
        torch.tensor(target),
        torch.tensor(segment),
        B,
    )


def check_batch_size(batch_size: int) -> None:
    """A DataError unless ``batch_size`` is a positive count."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}", where="batch_size", fix="use e.g. 8")


def chunked(order: Sequence[int], size: int) -> list[list[int]]:
    """``order`` cut into consecutive batches of ``size`` (the last one shorter)."""
    return [list(order[s : s + size]) for s in range(0, len(order), size)]


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the 0/1 attention mask for plain (unpacked) sequences."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def segment_logps(logits: torch.Tensor, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of (matching, non-matching) per pair from logits at ``pred`` positions."""
    token_logp = logits.float().log_softmax(-1).gather(-1, batch.target[:, None]).squeeze(-1)
    sums = torch.zeros(2 * batch.n_pairs, dtype=token_logp.dtype, device=token_logp.device)
    sums = sums.index_add(0, batch.segment, token_logp)
    return sums[0::2], sums[1::2]


def segment_counts(batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Number of tokens in each pair's (matching, non-matching) response."""
    counts = torch.bincount(batch.segment.cpu(), minlength=2 * batch.n_pairs)
    return counts[0::2], counts[1::2]


def response_hidden(hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Hidden states at the positions that predict response tokens: [N, H]."""
    return hidden[batch.pred_b, batch.pred_pos]
