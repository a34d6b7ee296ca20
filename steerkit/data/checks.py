"""Checks and splits of pair lists (pure): drop what contrasts nothing, split by question."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import DataError
from .pairs import PAIR_FIELDS, ContrastivePair


@dataclass
class ValidationReport:
    """Pairs kept by ``validate`` and what was dropped, with counts per reason."""

    pairs: list[ContrastivePair]
    dropped_duplicates: int = 0
    dropped_empty: int = 0
    dropped_identical: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.dropped_duplicates + self.dropped_empty + self.dropped_identical

    def summary(self) -> str:
        return (
            f"kept {len(self.pairs)}, dropped {self.dropped_empty} with an empty field, "
            f"{self.dropped_identical} with matching == not_matching, {self.dropped_duplicates} exact duplicates"
        )


def validate(pairs: Sequence[ContrastivePair], source: str = "<name>", strict: bool = False) -> ValidationReport:
    """Drop exact duplicates; drop (or, if ``strict``, reject) empty and self-contrasting pairs.

    Row N in messages is the pair's 1-based position in ``pairs``. Raises DataError when nothing is left.
    """
    report = ValidationReport(pairs=[])
    seen: set[tuple[str, str, str]] = set()
    for n, pair in enumerate(pairs, 1):
        label = f"row {n}" + (f" (id {pair.id})" if pair.id else "")
        empty = [k for k in PAIR_FIELDS if not getattr(pair, k).strip()]
        if empty:
            if strict:
                raise DataError(
                    f"empty {', '.join(empty)}",
                    f"{source}:row {n}",
                    "fill in the field or remove the row (non-strict validation drops it)",
                )
            report.dropped_empty += 1
            report.problems.append(f"{label}: empty {', '.join(empty)} (dropped)")
            continue
        if pair.matching == pair.not_matching:
            if strict:
                raise DataError(
                    "matching and not_matching are the same text, so the pair contrasts nothing",
                    f"{source}:row {n}",
                    "give the two responses different texts or remove the row",
                )
            report.dropped_identical += 1
            report.problems.append(f"{label}: matching == not_matching (dropped)")
            continue
        key = (pair.question, pair.matching, pair.not_matching)
        if key in seen:
            report.dropped_duplicates += 1
            report.problems.append(f"{label}: exact duplicate of an earlier row (dropped)")
            continue
        seen.add(key)
        report.pairs.append(pair)
    if not report.pairs:
        raise DataError(
            f"no usable pairs: {len(pairs)} in, {report.dropped_empty} with an empty field, "
            f"{report.dropped_identical} with matching == not_matching, {report.dropped_duplicates} exact duplicates",
            source,
            "check that the file and column mapping are right; each pair needs a question and two different responses",
        )
    return report


def split(
    pairs: Sequence[ContrastivePair], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[ContrastivePair], list[ContrastivePair]]:
    """Deterministic group split: pairs sharing a question land on the same side.

    Questions are ordered by sha256(seed, question) (no Python hash), then whole groups go to
    test until it holds about ``test_fraction`` of the pairs; train always keeps at least one group.
    Both sides keep the input order.
    """
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}", "test_fraction", "use e.g. 0.2")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p.question, []).append(i)
    target = round(test_fraction * len(pairs))
    if target and len(groups) < 2:
        raise DataError(
            f"cannot split {len(pairs)} pairs: they share {len(groups)} distinct question(s)",
            "split",
            "add pairs with other questions, or use test_fraction=0",
        )
    order = sorted(groups, key=lambda q: hashlib.sha256(f"{seed}\x00{q}".encode()).hexdigest())
    test_idx: set[int] = set()
    for q in order[:-1]:
        if len(test_idx) >= target:
            break
        test_idx.update(groups[q])
    train = [p for i, p in enumerate(pairs) if i not in test_idx]
    test = [p for i, p in enumerate(pairs) if i in test_idx]
    return train, test
