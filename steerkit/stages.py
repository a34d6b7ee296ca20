"""The pipeline stages as plain functions that read files and write files.

The CLI, ``dvc.yaml`` and the Prefect flows all call these; none of them holds logic of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import bipo
from .caa import train_caa
from .errors import DataError
from .fileio import atomic_write_json, sha256_file
from .layout import pairs_dir, safe_name
from .models import LoadedModel
from .packing import encode_pairs
from .pairs import ContrastivePair, read_pairs, read_pairs_jsonl, split, validate, write_pairs_jsonl
from .vector import SteeringVector


@dataclass
class Prepared:
    behavior: str
    train: Path
    test: Path
    n_train: int
    n_test: int
    dropped: dict[str, int]


def prepare(behavior: str, inputs: Sequence[str | Path], root: str | Path = ".", fmt: str = "auto",
            test_fraction: float = 0.2, seed: int = 0, test_inputs: Sequence[str | Path] = ()) -> Prepared:
    """Read, validate and split one behavior's data into ``data/pairs/<behavior>/{train,test}.jsonl``.

    With ``test_inputs`` the given files are the test split (no random split); otherwise a
    question-grouped split by ``seed`` is made.
    """
    safe_name(behavior)
    if not inputs:
        raise DataError("no input files given", where=behavior, fix="pass at least one data file")
    train_pairs = _read_all(inputs, fmt)
    report = validate(train_pairs, source=", ".join(map(str, inputs)))
    pairs = report.pairs
    dropped = {"duplicates": report.dropped_duplicates, "empty": report.dropped_empty,
               "identical": report.dropped_identical}
    if test_inputs:
        test_report = validate(_read_all(test_inputs, fmt), source=", ".join(map(str, test_inputs)))
        train_qs = {p.question for p in pairs}
        test = [p for p in test_report.pairs if p.question not in train_qs]
        dropped["test_overlapping_train"] = len(test_report.pairs) - len(test)
        train = pairs
    else:
        train, test = split(pairs, test_fraction=test_fraction, seed=seed)
    if not test:
        raise DataError("the test split is empty", where=behavior, fix="give more data or a larger test fraction")
    out = pairs_dir(root, behavior)
    write_pairs_jsonl(out / "train.jsonl", train)
    write_pairs_jsonl(out / "test.jsonl", test)
    return Prepared(behavior, out / "train.jsonl", out / "test.jsonl", len(train), len(test), dropped)


def _read_all(paths: Sequence[str | Path], fmt: str) -> list[ContrastivePair]:
    out: list[ContrastivePair] = []
    for p in paths:
        out += read_pairs(p, fmt=fmt)
    return out


def load_pairs(path: str | Path, limit: int | None = None) -> list[ContrastivePair]:
    """Pairs from our JSONL (or any format ``read_pairs`` sniffs), validated, optionally the first ``limit``."""
    path = Path(path)
    pairs = read_pairs_jsonl(path) if path.suffix == ".jsonl" else read_pairs(path)
    pairs = validate(pairs, source=str(path)).pairs
    return pairs[:limit] if limit else pairs


def train_vector(lm: LoadedModel, train_file: str | Path, out: str | Path, *, behavior: str,
                 method: str = "bipo", cfg: bipo.BipoConfig | None = None, engine: str = "fast",
                 limit: int | None = None, resume: bool = False, progress: bool = True,
                 system: str | None = None) -> tuple[SteeringVector, dict[str, Any]]:
    """Train one vector from a pairs file and save it (+ its training log and checkpoint beside it)."""
    safe_name(behavior)
    cfg = cfg or bipo.BipoConfig()
    t0 = time.perf_counter()
    pairs = load_pairs(train_file, limit)
    max_len = getattr(lm.model.config, "max_position_embeddings", None)
    enc = encode_pairs(lm.tokenizer, pairs, system=system, max_length=max_len)
    data = {"behavior": behavior, "data_file": str(train_file), "data_sha256": sha256_file(train_file),
            "system_prompt": system}
    out = Path(out)
    if method == "bipo":
        result = bipo.train(lm.model, enc, cfg, lm.tokenizer.pad_token_id, engine=engine, model_name=lm.name,
                            checkpoint=out.with_suffix(".ckpt"), resume=resume, progress=progress, extra_meta=data)
        vector = result.vector
        bipo.write_log_csv(out.with_suffix(".log.csv"), result.log)
    elif method == "caa":
        vector = train_caa(lm.model, enc, cfg.layer, lm.tokenizer.pad_token_id, model_name=lm.name)
        vector.meta.update(data)
    else:
        raise DataError(f"unknown method {method!r}", where="--method", fix="use bipo or caa")
    vector.meta["seconds"] = round(time.perf_counter() - t0, 2)
    sha = vector.save(out)
    ckpt = out.with_suffix(".ckpt")
    if ckpt.exists():
        ckpt.unlink()  # the finished vector supersedes the last epoch's checkpoint
    return vector, {"path": str(out), "sha256": sha, "seconds": vector.meta["seconds"]}
