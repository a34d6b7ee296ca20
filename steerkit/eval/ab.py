"""The A/B curve: how likely the model picks the matching option's letter in a multiple-choice form.

Each pair is shown as a question with "(A)/(B)" options and the answer started with "(", so the
next token is the letter; ``ab_curve`` averages p(matching letter), normalised over the options.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.pairs import ContrastivePair
from ..errors import DataError
from ..models import format_prompt, model_device, pad_token_id
from ..packing import check_batch_size, chunked, right_pad
from ..vector import SteeringVector
from .curves import as_multipliers, mean
from .metrics import per_pair
from .scoring import Batch, Runner

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class ABItem:
    """A pair shown as a multiple-choice question: its text, option letters and the matching option."""

    question: str
    letters: tuple[str, ...]
    matching: int  # index into letters

    @property
    def matching_letter(self) -> str:
        return self.letters[self.matching]


def _a_first(question: str) -> bool:
    """Stable ~50/50 order for free-text pairs (a hash, not Python's salted ``hash``)."""
    return hashlib.sha256(question.encode("utf-8")).digest()[0] % 2 == 0


def ab_item(pair: ContrastivePair) -> ABItem:
    """The multiple-choice form of a pair (pure).

    With ``choices``: the question as is when it already lists "(A)" options (Anthropic/CAA form),
    else "question\\n\\nChoices:\\n(A) …\\n(B) …". Without: the two answers as (A)/(B) in an order
    fixed by a hash of the question, as in BiPO's test_infer files.
    """
    where = f"pair {pair.id}" if pair.id else "pair"
    if pair.choices:
        if len(pair.choices) < 2 or len(pair.choices) > len(LETTERS):
            raise DataError(f"{len(pair.choices)} choices; need 2 to {len(LETTERS)}", where=where)
        letters = tuple(LETTERS[: len(pair.choices)])
        if pair.matching_letter is not None:
            if pair.matching_letter not in letters:
                raise DataError(f"matching letter {pair.matching_letter!r} is not among {letters}", where=where)
            k = letters.index(pair.matching_letter)
        elif pair.matching in pair.choices:
            k = pair.choices.index(pair.matching)
        else:
            raise DataError(
                "the pair has choices but no matching_letter, and its matching answer is not one of them",
                where=where,
                fix="add matching_letter, or make 'matching' one of the choices",
            )
        if "(A)" in pair.question:
            text = pair.question
        else:
            text = pair.question + "\n\nChoices:\n" + "\n".join(f"({L}) {c}" for L, c in zip(letters, pair.choices))
        return ABItem(text, letters, k)
    a_first = _a_first(pair.question)
    options = (pair.matching, pair.not_matching) if a_first else (pair.not_matching, pair.matching)
    text = f"{pair.question}\n\nChoices:\n(A) {options[0]}\n(B) {options[1]}"
    return ABItem(text, ("A", "B"), 0 if a_first else 1)


def letter_token_ids(tokenizer: Any, letters: Sequence[str]) -> dict[str, int]:
    """Each letter's token id as the model would write it right after "(".

    The letter is read off the tokenisation of "(X)" minus that of "("; a tokenizer that merges
    "(" with the letter or splits the letter is an error (the A/B probe needs one token per letter).
    """

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    base = ids("(")
    out: dict[str, int] = {}
    for letter in letters:
        full = ids("(" + letter)
        if full[: len(base)] == base and len(full) == len(base) + 1:
            out[letter] = full[-1]
            continue
        alone = ids(letter)
        if len(alone) != 1:
            raise DataError(
                f"option letter {letter!r} is not a single token for this tokenizer (got {alone})",
                where="A/B evaluation",
                fix="skip the A/B curve for this model",
            )
        out[letter] = alone[0]
    if len(set(out.values())) != len(out):
        raise DataError(f"option letters {list(out)} share token ids {list(out.values())}", where="A/B evaluation")
    return out


@dataclass(frozen=True)
class EncodedAB:
    """Token ids of an A/B prompt (chat-formatted question, then "("), its option letters' ids and the matching one."""

    prompt: tuple[int, ...]
    option_ids: tuple[int, ...]
    matching: int


def encode_ab(tokenizer: Any, items: Sequence[ABItem], system: str | None = None) -> list[EncodedAB]:
    """Tokenise A/B items once (the answer starts with "(" so the next token is the letter)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    letter_ids = letter_token_ids(tokenizer, sorted({L for it in items for L in it.letters}))
    return [
        EncodedAB(
            tuple(
                tokenizer(format_prompt(tokenizer, it.question, system) + "(", add_special_tokens=not templated)[
                    "input_ids"
                ]
            ),
            tuple(letter_ids[L] for L in it.letters),
            it.matching,
        )
        for it in items
    ]


def ab_runner(
    model: nn.Module, encoded: Sequence[EncodedAB], pad_id: int, batch_size: int = 8, cached: bool = True
) -> Runner:
    """A/B prompts right-padded in batches of similar length; every position is prompt (the letter comes next)."""
    check_batch_size(batch_size)
    device = model_device(model)
    batches = []
    for idx in chunked(sorted(range(len(encoded)), key=lambda i: len(encoded[i].prompt)), batch_size):
        ids, mask = right_pad([encoded[i].prompt for i in idx], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        batches.append(Batch(idx, ids, mask, mask.bool()))
    return Runner(model, batches, cached)


def letter_probabilities(
    runner: Runner, encoded: Sequence[EncodedAB], finals: Sequence[torch.Tensor]
) -> list[tuple[float, float]]:
    """Per item: (p of the matching letter normalised over the option letters, mass on all option letters)."""
    head = runner.model.get_output_embeddings()
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(encoded)
    with torch.no_grad():
        for b, hidden in zip(runner.batches, finals):
            last = b.attention_mask.sum(1) - 1  # right-padded: the last real token predicts the letter
            probs = head(hidden[torch.arange(len(b.idx), device=hidden.device), last]).float().softmax(-1).cpu()
            for row, i in enumerate(b.idx):
                opts = probs[row, list(encoded[i].option_ids)].double()
                total = float(opts.sum())
                p = float(opts[encoded[i].matching]) / total if total > 0 else 1.0 / len(opts)
                out[i] = (p, total)
    return out


def ab_probabilities(
    model: nn.Module, encoded: Sequence[EncodedAB], pad_id: int, batch_size: int = 8
) -> list[tuple[float, float]]:
    """Per item, unsteered: (p of the matching letter normalised over the options, mass on all option letters)."""
    runner = ab_runner(model, encoded, pad_id, batch_size, cached=False)
    return letter_probabilities(runner, encoded, runner.plain())


def ab_curve(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastivePair],
    vector: SteeringVector,
    multipliers: Sequence[float],
    batch_size: int = 8,
    system: str | None = None,
    positions: str = "all",
    cached: bool = True,
    runner: tuple[Runner, list[EncodedAB]] | None = None,
) -> list[dict]:
    """Mean probability of the matching option's letter (normalised over the options), per multiplier.

    ``letter_mass`` is the unnormalised probability on all option letters: low means the model
    does not answer with a letter at that multiplier, and ``p_matching`` means little there.
    """
    mults = as_multipliers(multipliers)
    if runner is None:
        if not pairs:
            raise DataError("no test pairs to evaluate", fix="pass a non-empty test file")
        encoded = encode_ab(tokenizer, [ab_item(p) for p in pairs], system)
        runner = ab_runner(model, encoded, pad_token_id(tokenizer), batch_size, cached), encoded
    run, encoded = runner
    rows = []
    for m, finals in run.finals_many(vector, mults, positions).items():
        res = letter_probabilities(run, encoded, finals)
        rows.append(
            {
                "multiplier": m,
                "p_matching": mean([p for p, _ in res]),
                "letter_mass": mean([t for _, t in res]),
                "p_matchings": per_pair([p for p, _ in res]),
            }
        )
    return rows
