"""The prepare stage: one behavior's raw data files → validated, split ``data/pairs/<behavior>/{train,test}.jsonl``.

Beside the pairs it writes ``source.json``: where they came from (each input file and its sha256, what
was dropped) and, for pairs a teacher wrote, the generation's provenance (the description, the
teacher, the prompts, the seed): training and evaluation read it from there, so it travels with the pairs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.checks import split, validate
from ..data.pairs import ContrastivePair, write_pairs_jsonl
from ..data.readers import read_pairs
from ..errors import DataError, option
from ..fileio import atomic_write_json
from ..layout import pairs_file, pairs_source, provenance_path, safe_name


@dataclass
class Prepared:
    """What prepare wrote and dropped."""

    behavior: str
    train: Path
    test: Path
    n_train: int
    n_test: int
    dropped: dict[str, int]
    source: Path | None = None


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
    # only what the pairs are, not how the raw files happened to hash: rows prepare drops leave it unchanged,
    # so the stages that read it (train, evaluate) are not rerun for nothing (DVC records the inputs' hashes)
    source = {
        "format": SOURCE_FORMAT,
        "behavior": behavior,
        "inputs": [_file(p, root) for p in inputs],
        "test_inputs": [_file(p, root) for p in test_inputs],
        "generated": generation_of([*inputs, *test_inputs]),
    }
    written = atomic_write_json(pairs_source(root, behavior), source)
    return Prepared(behavior, train_file, test_file, len(train), len(test), dropped, written)


SOURCE_FORMAT = "steerkit.pairs-source"


def _file(path: str | Path, root: str | Path) -> str:
    """An input file as ``source.json`` records it: its path, relative to the project when inside it."""
    p = Path(path)
    try:
        return Path(os.path.abspath(p)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return p.as_posix()


def generation_of(inputs: Sequence[str | Path]) -> dict | None:
    """The provenance of pairs a teacher wrote, if the inputs have one beside them (``<name>.generation.json``,
    or ``generation.json`` in their folder), else None."""
    for path in map(Path, inputs):
        for candidate in (provenance_path(path), path.parent / "generation.json"):
            if candidate.is_file():
                try:
                    return json.loads(candidate.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise DataError(f"cannot read the generation's provenance ({exc})", where=str(candidate)) from None
    return None


def source_of(pairs: str | Path) -> dict | None:
    """The ``source.json`` beside a prepared pairs file, or None (pairs prepared elsewhere)."""
    path = Path(pairs).parent / "source.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read where the pairs came from ({exc})", where=str(path)) from None


def read_all(paths: Sequence[str | Path], fmt: str, mapping: Mapping[str, str] | None = None) -> list[ContrastivePair]:
    """The pairs of every file, in order."""
    out: list[ContrastivePair] = []
    for p in paths:
        out += read_pairs(p, fmt=fmt, mapping=mapping)
    return out
