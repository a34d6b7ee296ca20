"""A description in, contrastive pairs out: the teacher writes the prompts, the questions and both answers.

1. the two system prompts (given, else written by the teacher from the description; a reply that is
   not a usable instruction falls back to a plain template, and the provenance says so);
2. the questions (a file, else the teacher writes varied ones — a topic hint each — until there are
   enough distinct ones);
3. per question, the answer under the toward prompt (``matching``) and under the away prompt;
4. the filters (``steerkit.synth.filters``), the judge last (the teacher scores both answers 1–4).

Every reply goes through the journal, so a run that stops keeps what it had. The result carries its
provenance: the teacher (its model name, never a key), the prompts, the description, the seed and the
sampling, and how many pairs were dropped for what.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data.checks import split
from ..data.pairs import ContrastivePair, write_pairs_jsonl
from ..errors import DataError, option, setting
from ..fileio import atomic_write_json, sha256_file
from ..layout import provenance_path
from . import asks, filters
from .config import GenerateConfig
from .journal import Journal
from .teacher import Teacher

FORMAT, FORMAT_VERSION = "steerkit.generation", 1
QUESTIONS_PER_PAIR = 1.5  # questions asked per pair wanted: the filters drop some
MAX_ROUNDS = 6


@dataclass
class Generated:
    """The kept pairs (in question order) and their provenance."""

    pairs: list[ContrastivePair]
    provenance: dict[str, Any]


def _prompts(cfg: GenerateConfig, teacher: Teacher, journal: Journal) -> dict[str, str]:
    if (cfg.toward is None) != (cfg.away is None):
        raise DataError(
            "the generation needs both system prompts, toward and away, or neither",
            where=option("toward"),
            fix=f"give both ({option('toward')} and {option('away')}), or neither (the teacher writes them)",
        )
    if cfg.toward is not None:
        return {"toward": cfg.toward, "away": cfg.away, "written_by": "given"}
    replies = journal.ask(teacher, [asks.ask_prompt(cfg.describe, side, cfg.seed) for side in asks.SIDES])
    out: dict[str, str] = {}
    by = []
    for side, reply in zip(asks.SIDES, replies):
        read = asks.read_prompt(reply)
        out[side] = read or asks.fallback_prompt(cfg.describe, side)
        by.append("teacher" if read else f"template (the teacher's reply was unusable: {reply[:80]!r})")
    out["written_by"] = by[0] if by[0] == by[1] else f"toward: {by[0]}; away: {by[1]}"
    return out


def _questions(cfg: GenerateConfig, teacher: Teacher, journal: Journal, dropped: dict[str, int], log: Callable):
    if cfg.questions:
        path = Path(cfg.questions)
        try:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as exc:
            raise DataError(f"cannot read the questions ({exc.strerror or exc})", where=str(path)) from None
        kept, dup = filters.new_questions(lines)
        dropped["duplicate question"] += dup
        return kept, {"source": path.as_posix(), "sha256": sha256_file(path), "asked": len(lines), "kept": len(kept)}
    want = math.ceil(cfg.pairs * QUESTIONS_PER_PAIR)
    kept: list[str] = []
    asked = 0
    for _ in range(MAX_ROUNDS):
        need = want - len(kept)
        if need <= 0:
            break
        requests = [asks.ask_question(cfg.describe, asked + k, cfg.seed, cfg.temperature) for k in range(need)]
        asked += need
        replies = journal.ask(teacher, requests, progress=lambda d, n: log(f"questions: {d}/{n} asked"))
        read = [asks.read_question(r) for r in replies]
        dropped["unusable question"] += sum(q is None for q in read)
        new, dup = filters.new_questions([q for q in read if q], kept)
        dropped["duplicate question"] += dup
        kept += new
    return kept, {"source": "teacher", "asked": asked, "kept": len(kept)}


def generate_pairs(
    cfg: GenerateConfig, teacher: Teacher, journal: Journal, *, behavior: str, log: Callable[[str], None] = print
) -> Generated:
    """Write pairs for ``cfg.describe`` with ``teacher`` (every reply through ``journal``)."""
    if not cfg.describe.strip():
        raise DataError(
            "the behavior needs a description",
            where=option("describe"),
            fix=f"describe it in words, e.g. {setting('describe', 'talks like a pirate')}",
        )
    dropped = dict.fromkeys(("unusable question", *filters.REASONS), 0)
    examples: dict[str, list[dict[str, str]]] = {}
    prompts = _prompts(cfg, teacher, journal)
    questions, origin = _questions(cfg, teacher, journal, dropped, log)
    log(f"{len(questions)} questions; answering each under the toward and the away prompt")
    answers = journal.ask(
        teacher,
        [
            asks.ask_answer(q, prompts[side], 2 * k + s, cfg.seed, cfg.temperature, cfg.max_new_tokens)
            for k, q in enumerate(questions)
            for s, side in enumerate(asks.SIDES)
        ],
        progress=lambda d, n: log(f"answers: {d}/{n}"),
    )
    candidates = []
    for k, q in enumerate(questions):
        matching, not_matching = answers[2 * k], answers[2 * k + 1]
        why = filters.pair_problem(matching, not_matching, cfg.max_new_tokens)
        if why is None:
            candidates.append((q, matching, not_matching))
        else:
            dropped[why] += 1
            examples.setdefault(why, []).append({"question": q, "matching": matching, "not_matching": not_matching})
    unscored = 0
    if cfg.judge and candidates:
        log(f"judging {len(candidates)} pairs (the teacher scores both answers 1-4)")
        scores = journal.ask(
            teacher,
            [asks.ask_score(cfg.describe, q, a) for q, m, n in candidates for a in (m, n)],
            progress=lambda d, n: log(f"judged: {d}/{n}"),
        )
        judged = []
        for i, pair in enumerate(candidates):
            toward, away = asks.read_score(scores[2 * i]), asks.read_score(scores[2 * i + 1])
            unscored += toward is None or away is None
            if filters.judged_wrong(toward, away):
                dropped["judged the wrong way round"] += 1
                examples.setdefault("judged the wrong way round", []).append(
                    dict(zip(("question", "matching", "not_matching"), pair))
                )
            else:
                judged.append(pair)
        candidates = judged
    pairs = [ContrastivePair(q, m, n, id=f"{behavior}-{i}") for i, (q, m, n) in enumerate(candidates[: cfg.pairs])]
    if len(pairs) < 2:
        raise DataError(
            f"the teacher gave {len(pairs)} usable pair(s) out of {len(questions)} questions "
            f"(dropped: {', '.join(f'{k} {v}' for k, v in dropped.items() if v) or 'none'})",
            where=f"behavior {behavior}",
            fix="use a stronger teacher (teacher openai), give questions, or turn the judge off (judge false)",
        )
    provenance = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "behavior": behavior,
        "description": cfg.describe,
        "teacher": teacher.info(),
        "prompts": prompts,
        "questions": origin,
        "sampling": {"seed": cfg.seed, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens},
        "config": asdict(cfg),
        "pairs": {"kept": len(pairs), "asked_for": cfg.pairs, "candidates": len(candidates)},
        "dropped": {k: v for k, v in dropped.items() if v},
        "unscored_by_the_judge": unscored,
        "examples_dropped": {k: v[:2] for k, v in examples.items()},
    }
    return Generated(pairs, provenance)


def summary_of(provenance: dict[str, Any]) -> dict[str, Any]:
    """What a vector's metadata and its catalog entry keep of a generation: enough to say how its data was made."""
    keys = ("description", "teacher", "prompts", "sampling", "dropped")
    return {**{k: provenance.get(k) for k in keys}, "pairs": (provenance.get("pairs") or {}).get("kept")}


def write_one(gen: Generated, out: str | Path) -> tuple[Path, Path]:
    """All kept pairs in one file (``steerkit data prepare`` splits it) and the provenance beside it."""
    pairs = write_pairs_jsonl(out, gen.pairs)
    return pairs, atomic_write_json(provenance_path(out), {**gen.provenance, "files": {"pairs": Path(out).name}})


def write_split(gen: Generated, folder: str | Path, test_fraction: float, seed: int) -> tuple[Path, Path, Path]:
    """``train.jsonl`` and ``test.jsonl`` (split by question, seeded) and ``generation.json`` in ``folder``."""
    folder = Path(folder)
    train, test = split(gen.pairs, test_fraction=test_fraction, seed=seed)
    prov = {**gen.provenance, "files": {"train": "train.jsonl", "test": "test.jsonl"}}
    prov["pairs"] = {**prov["pairs"], "train": len(train), "test": len(test)}
    return (
        write_pairs_jsonl(folder / "train.jsonl", train),
        write_pairs_jsonl(folder / "test.jsonl", test),
        atomic_write_json(folder / "generation.json", prov),
    )
