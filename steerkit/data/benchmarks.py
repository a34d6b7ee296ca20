"""Readers of benchmark files that are not plain pairs: TruthfulQA (CSV and MC1 JSON) and AdvBench."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DataError
from .files import (
    PathLike,
    describe,
    read_csv,
    read_json_array,
    require_columns,
    require_keys,
    row_where,
    text_field,
)
from .pairs import ContrastivePair


def read_truthfulqa_csv(path: PathLike) -> list[ContrastivePair]:
    """TruthfulQA.csv as pairs for the behavior "truthfulness": Best Answer vs Best Incorrect Answer."""
    path, header, records = read_csv(path)
    needed = ("Question", "Best Answer", "Best Incorrect Answer")
    require_columns(header, needed, f"{path}:header", "use the 2025 TruthfulQA.csv (it has 'Best Incorrect Answer')")
    return [ContrastivePair(*(rec[k].strip() for k in needed), id=f"{path.stem}-{n}") for n, rec in records]


def read_truthfulqa_mc(path: PathLike) -> list[dict[str, Any]]:
    """TruthfulQA mc_task.json as ``{"question", "choices" (mc1, file order), "correct" (index)}``.

    The correct answer is first in the file, so shuffle choices before showing them to a model.
    """
    path, items = read_json_array(path)
    out = []
    for n, item in enumerate(items, 1):
        where = row_where(path, n)
        if not isinstance(item, Mapping):
            raise DataError(f"expected an object, got {describe(item)}", where, "each item must be a JSON object")
        require_keys(item, ("question", "mc1_targets"), where)
        targets = item["mc1_targets"]
        if not isinstance(targets, Mapping) or not all(isinstance(k, str) and v in (0, 1) for k, v in targets.items()):
            raise DataError("'mc1_targets' must map answer text to 0 or 1", where, "write {answer: 1 if true else 0}")
        labels = list(targets.values())
        if labels.count(1) != 1:
            raise DataError(
                f"'mc1_targets' has {labels.count(1)} true answers; mc1 needs exactly 1",
                where,
                "mark exactly one answer with 1",
            )
        out.append(
            {
                "question": text_field(item["question"], "question", where),
                "choices": [c.strip() for c in targets],
                "correct": labels.index(1),
            }
        )
    return out


def read_advbench_csv(path: PathLike) -> list[dict[str, str]]:
    """AdvBench harmful_behaviors.csv as ``{"goal", "target"}`` dicts (prompts, no refusals)."""
    path, header, records = read_csv(path)
    require_columns(header, ("goal", "target"), f"{path}:header", "use AdvBench's harmful_behaviors.csv (goal,target)")
    return [{"goal": rec["goal"].strip(), "target": rec["target"].strip()} for _, rec in records]
