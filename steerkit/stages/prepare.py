"""The prepare stage: one behavior's raw data files → validated, split ``data/pairs/<behavior>/{train,test}.jsonl``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.checks import split, validate
from ..data.pairs import ContrastivePair, write_pairs_jsonl
from ..data.readers import read_pairs
from ..errors import DataError, option
from ..layout import pairs_file, safe_name


@dataclass
class Prepared:
    """What prepare wrote and dropped."""

    behavior: str
    train: Path
    test: Path
    n_train: int
    n_test: int
    dropped: dict[str, int]


def prepare(
    behavior: str,
    inputs: Sequence[str | Path],
    root: str | Path = ".",
    fmt: str = "auto",
    test_fraction: float = 0.2,
    seed: int = 0,
    test_inputs: Sequence[str | Path] = (),
    mapping: Mapping[str, str] | None = None,
) -> Prepared:
    """Read, validate and split one behavior's data into ``data/pairs/<behavior>/{train,test}.jsonl``.

    With ``test_inputs`` the given files are the test split (no random split); otherwise a
    question-grouped split by ``seed`` is made. ``mapping`` ({our field: their column}) reads any table.
    """
    safe_name(behavior)
    if not inputs:
        raise DataError("no input files given", where=behavior, fix=f"name at least one data file ({option('inputs')})")
    train_pairs = read_all(inputs, fmt, mapping)
    report = validate(train_pairs, source=", ".join(map(str, inputs)))
    pairs = report.pairs
    dropped = {
        "duplicates": report.dropped_duplicates,
        "empty": report.dropped_empty,
        "identical": report.dropped_identical,
    }
    if test_inputs:
        test_report = validate(read_all(test_inputs, fmt, mapping), source=", ".join(map(str, test_inputs)))
        train_qs = {p.question for p in pairs}
        test = [p for p in test_report.pairs if p.question not in train_qs]
        dropped["test_overlapping_train"] = len(test_report.pairs) - len(test)
        train = pairs
    else:
        train, test = split(pairs, test_fraction=test_fraction, seed=seed)
    if not test:
        raise DataError("the test split is empty", where=behavior, fix="give more data or a larger test fraction")
    train_file, test_file = pairs_file(root, behavior, "train"), pairs_file(root, behavior, "test")
    write_pairs_jsonl(train_file, train)
    write_pairs_jsonl(test_file, test)
    return Prepared(behavior, train_file, test_file, len(train), len(test), dropped)


def read_all(paths: Sequence[str | Path], fmt: str, mapping: Mapping[str, str] | None = None) -> list[ContrastivePair]:
    """The pairs of every file, in order."""
    out: list[ContrastivePair] = []
    for p in paths:
        out += read_pairs(p, fmt=fmt, mapping=mapping)
    return out
