"""Which generated pairs are dropped, and why (pure): every dropped pair is counted under its reason.

- ``duplicate question``: near the same words as a question already kept;
- ``empty``: an answer with fewer than three words;
- ``over-long``: an answer far past the token budget (an endpoint that ignored it);
- ``refusal``: an answer that refuses instead of answering;
- ``near-duplicate answers``: the two answers say nearly the same thing (nothing to learn from);
- ``judged the wrong way round``: the judge scores the away answer above the toward one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..eval.judges import is_refusal

REASONS = (
    "duplicate question",
    "empty",
    "over-long",
    "refusal",
    "near-duplicate answers",
    "judged the wrong way round",
)
SIMILAR = 0.8  # word-set Jaccard at or above which two texts count as the same
CHARS_PER_TOKEN = 8  # an answer longer than this many characters per token of budget ignored the budget

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' word sets (1: the same words)."""
    x, y = words(a), words(b)
    return len(x & y) / len(x | y) if x or y else 1.0


def new_questions(candidates: Sequence[str], kept: Sequence[str] = ()) -> tuple[list[str], int]:
    """The candidates that are not near-duplicates of a kept question or of each other, and how many were."""
    out, dropped = list(kept), 0
    for q in candidates:
        if any(similarity(q, k) >= SIMILAR for k in out):
            dropped += 1
        else:
            out.append(q)
    return out[len(kept) :], dropped


def answer_problem(text: str, max_new_tokens: int) -> str | None:
    """Why one answer is unusable (a reason of ``REASONS``), or None."""
    if len(text.split()) < 3:
        return "empty"
    if len(text) > CHARS_PER_TOKEN * max_new_tokens:
        return "over-long"
    if is_refusal(text):
        return "refusal"
    return None


def pair_problem(matching: str, not_matching: str, max_new_tokens: int) -> str | None:
    """Why a pair is dropped before judging, or None."""
    for text in (matching, not_matching):
        if (why := answer_problem(text, max_new_tokens)) is not None:
            return why
    if similarity(matching, not_matching) >= SIMILAR:
        return "near-duplicate answers"
    return None


def judged_wrong(score_toward: int | None, score_away: int | None) -> bool:
    """The judge put the away answer above the toward one (an unscored answer decides nothing)."""
    return score_toward is not None and score_away is not None and score_away > score_toward
