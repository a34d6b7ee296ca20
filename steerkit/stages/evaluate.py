"""The evaluate stage: a vector (+ its CAA baseline) and held-out pairs → ``reports/eval/<model>/<name>.{json,png}``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import to_plain
from ..data.prompts import prompts_for
from ..data.readers import load_pairs
from ..data.texts import neutral_texts
from ..errors import DataError, setting
from ..eval.config import EvalConfig
from ..eval.judges import make_judge
from ..eval.report import evaluate_vector, write_report
from ..fileio import sha256_file
from ..layout import report_name, report_path
from ..models import LoadedModel, load_model
from ..train.seeds import load_seeds
from ..vector import SteeringVector
from .prepare import source_of


@dataclass
class Evaluated:
    """The report and the files it was written to."""

    report: dict[str, Any]
    json: Path
    png: Path


def default_out(vector: SteeringVector, where: str, model: str, root: str | Path = ".", stage: str = "eval") -> Path:
    """``reports/<stage>/<model>/<behavior>[.<method>].json`` for a vector whose metadata names its behavior."""
    behavior = vector.meta.get("behavior")
    if not behavior:
        raise DataError(
            "the vector's metadata names no behavior, so the report path cannot be derived",
            where=where,
            fix=f"name the report file: {setting('out', f'reports/{stage}/<model>/<name>.json')}",
        )
    return report_path(root, stage, model, report_name(behavior, vector.meta.get("method")))


def evaluate(
    vector_file: str | Path,
    test_file: str | Path,
    out: str | Path | None = None,
    *,
    model: str | LoadedModel,
    cfg: EvalConfig | None = None,
    limit: int | None = None,
    texts: str | Path | None = None,
    baseline: str | Path | None = None,
    prompt_toward: str | None = None,
    prompt_away: str | None = None,
    root: str | Path = ".",
    device: str | None = None,
    dtype: str | None = None,
) -> Evaluated:
    """Evaluate ``vector_file`` on ``test_file`` beside ``baseline`` (scaled to its norm) and the prompt baseline.

    The prompts are ``prompt_toward``/``prompt_away``; else, for pairs a teacher wrote, the very prompts that
    made them (did distilling the prompt into a vector keep its effect?); else steerkit's own for the
    vector's behavior (no prompt baseline when it has none). Writes the report JSON and its PNG.
    """
    cfg = cfg or EvalConfig()
    vec = SteeringVector.load(vector_file)
    base = SteeringVector.load(baseline) if baseline else None
    pairs = load_pairs(test_file, limit)
    neutral = neutral_texts(texts)
    judge = make_judge(cfg.judge, behavior=vec.meta.get("behavior")) if cfg.judge == "openai" else make_judge(cfg.judge)
    spec = model.name if isinstance(model, LoadedModel) else model
    out = Path(out) if out is not None else default_out(vec, str(vector_file), spec, root)  # before a model loads
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
    made = (source_of(test_file) or {}).get("generated") if prompt_toward is None and prompt_away is None else None
    if made:
        prompt_toward, prompt_away = made["prompts"]["toward"], made["prompts"]["away"]
    prompts = prompts_for(vec.meta.get("behavior"), prompt_toward, prompt_away)
    report = evaluate_vector(
        lm.model,
        lm.tokenizer,
        vec,
        pairs,
        cfg,
        judge=judge,
        texts=neutral,
        compare=base,
        prompts=prompts,
        seeds=load_seeds(vector_file, vec),
    )
    report.update(
        model=lm.name,
        vector_file=str(vector_file),
        vector_sha256=sha256_file(vector_file),
        test_file=str(test_file),
        test_sha256=sha256_file(test_file),
        baseline_file=str(baseline) if baseline else None,
        config=to_plain(cfg),
    )
    json_path, png_path = write_report(report, out)
    return Evaluated(report, json_path, png_path)
