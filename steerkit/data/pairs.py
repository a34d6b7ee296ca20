"""The contrastive pair: a question, an answer that shows a behavior and one that does not.

BiPO trains a steering vector from such pairs. This module owns the pair type and steerkit's own
pairs file (``data/pairs/<behavior>/{train,test}.jsonl``: one JSON object per line); the readers
of other formats are in ``readers`` and ``benchmarks``, the checks and splits in ``checks``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..fileio import atomic_write_jsonl
from .files import PathLike, describe, read_jsonl, require_keys, row_where, text_field

PAIR_FIELDS = ("question", "matching", "not_matching")


@dataclass(frozen=True)
class ContrastivePair:
    """One preference pair; ``matching`` shows the behavior to steer towards."""

    question: str
    matching: str  # response showing the behavior
    not_matching: str  # response not showing it
    choices: tuple[str, ...] = ()  # option texts shown as (A), (B), ... in this order
    matching_letter: str | None = None  # e.g. "A"
    not_matching_letter: str | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; optional fields appear only when set."""
        d: dict[str, Any] = {}
        if self.id is not None:
            d["id"] = self.id
        d.update(question=self.question, matching=self.matching, not_matching=self.not_matching)
        if self.choices:
            d["choices"] = list(self.choices)
        if self.matching_letter is not None:
            d["matching_letter"] = self.matching_letter
        if self.not_matching_letter is not None:
            d["not_matching_letter"] = self.not_matching_letter
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContrastivePair:
        """Inverse of ``to_dict``; raises DataError on missing keys or wrong types."""
        return pair_from_dict(d, where=None)


def pair_from_dict(d: Any, where: str | None) -> ContrastivePair:
    if not isinstance(d, Mapping):
        raise DataError(
            f"expected a JSON object with {', '.join(PAIR_FIELDS)}, got {type(d).__name__}",
            where,
            'write one object per line, e.g. {"question": ..., "matching": ..., "not_matching": ...}',
        )
    require_keys(d, PAIR_FIELDS, where)
    texts = {k: text_field(d[k], k, where) for k in PAIR_FIELDS}
    choices = d.get("choices") or ()
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
        raise DataError(
            f"field 'choices' must be a list of texts, got {describe(choices)}",
            where,
            "write choices as a JSON list of strings, or leave the key out",
        )
    letters = {}
    for key in ("matching_letter", "not_matching_letter"):
        value = d.get(key)
        if value is not None:
            value = text_field(value, key, where)
            if not is_letter(value) or (choices and letter_index(value) >= len(choices)):
                raise DataError(
                    f"field '{key}' is {value!r}, not a letter among the {len(choices)} choices",
                    where,
                    "use a single capital letter A, B, ... that indexes 'choices', or leave it out",
                )
        letters[key] = value
    raw_id = d.get("id")
    if raw_id is not None and (not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool)):
        raise DataError(f"field 'id' must be text, got {describe(raw_id)}", where, "make 'id' a string")
    return ContrastivePair(
        **texts,
        choices=tuple(c.strip() for c in choices),
        id=None if raw_id is None else str(raw_id),
        **letters,
    )


def is_letter(s: str) -> bool:
    return len(s) == 1 and "A" <= s <= "Z"


def letter_index(letter: str) -> int:
    return ord(letter) - ord("A")


def write_pairs_jsonl(path: PathLike, pairs: Iterable[ContrastivePair]) -> Path:
    """Write pairs one JSON object per line, atomically."""
    return atomic_write_jsonl(path, (p.to_dict() for p in pairs))


def read_pairs_jsonl(path: PathLike) -> list[ContrastivePair]:
    """Read what ``write_pairs_jsonl`` wrote."""
    path, rows = read_jsonl(path)
    return [pair_from_dict(obj, row_where(path, n)) for n, obj in rows]
