"""The generate stage: a behavior in words → ``data/generated/<behavior>/{train,test}.jsonl`` + ``generation.json``.

A teacher (the model being steered, in process, by default; or an OpenAI-compatible endpoint) writes
the system prompts, the questions and both answers (``steerkit.synth``); the filters drop what
cannot teach, the judge drops what is the wrong way round, and the provenance says how many were
dropped for what. ``generate`` is the pipeline's stage (split by question, as ``prepare`` reads it);
``generate_file`` is ``steerkit data generate --out FILE`` (all pairs in one file, for ``data prepare``).
Replies are journaled beside the output while the run goes: a run that stops keeps them, and the next
one asks only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..models import LoadedModel, load_model
from ..synth.config import GenerateConfig
from ..synth.journal import Journal
from ..synth.pairs import Generated, generate_pairs, write_one, write_split
from ..synth.teacher import make_teacher


@dataclass
class Written:
    """What a generation wrote, and its provenance (with the counts of what was dropped and why)."""

    files: tuple[Path, ...]
    generated: Generated


def _run(
    behavior: str,
    cfg: GenerateConfig,
    model: str | LoadedModel,
    journal: Path,
    log: Callable[[str], None],
    device: str | None,
    dtype: str | None,
) -> tuple[Generated, Journal]:
    def load_self() -> LoadedModel:
        return model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)

    teacher = make_teacher(cfg.teacher, load_self, cfg.concurrency)
    kept = Journal(journal)
    return generate_pairs(cfg, teacher, kept, behavior=behavior, log=log), kept


def generate(
    behavior: str,
    out_dir: str | Path,
    *,
    model: str | LoadedModel,
    cfg: GenerateConfig,
    log: Callable[[str], None] = print,
    device: str | None = None,
    dtype: str | None = None,
) -> Written:
    """Generate ``cfg.pairs`` pairs for ``behavior`` into ``out_dir`` (train/test split, provenance)."""
    out_dir = Path(out_dir)
    gen, journal = _run(behavior, cfg, model, out_dir / ".journal.jsonl", log, device, dtype)
    files = write_split(gen, out_dir, cfg.test_fraction, cfg.seed)
    journal.close()
    return Written(files, gen)


def generate_file(
    behavior: str,
    out: str | Path,
    *,
    model: str | LoadedModel,
    cfg: GenerateConfig,
    log: Callable[[str], None] = print,
    device: str | None = None,
    dtype: str | None = None,
) -> Written:
    """Generate ``cfg.pairs`` pairs for ``behavior`` into the pairs file ``out`` (+ its provenance beside it)."""
    out = Path(out)
    gen, journal = _run(behavior, cfg, model, out.with_name(f".{out.name}.journal.jsonl"), log, device, dtype)
    files = write_one(gen, out)
    journal.close()
    return Written(files, gen)
