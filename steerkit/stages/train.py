"""The train stage: training pairs → ``vectors/<model>/<behavior>/L<layer>[.caa].safetensors``.

``train_vector`` trains one vector into one file (``steerkit train``); ``train`` is the pipeline's
stage: BiPO and, as a baseline, CAA at the same layer, written into a staging folder that replaces
the behavior's vector folder only when both succeeded (a failed run leaves the old vectors).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.readers import load_pairs
from ..errors import DataError
from ..fileio import replace_dir, scratch_dir, sha256_file
from ..layout import safe_name, staging_dir
from ..models import LoadedModel, decoder_layers, load_model
from ..packing import encode_pairs
from ..recipes import Recipe, recipe_for
from ..synth.pairs import summary_of
from ..train import bipo
from ..train.caa import train_caa
from ..train.config import BipoConfig
from ..train.seeds import agreement, seed_paths
from ..vector import SteeringVector
from .options import BASELINES, METHODS
from .prepare import source_of


def train_vector(
    lm: LoadedModel,
    train_file: str | Path,
    out: str | Path,
    *,
    behavior: str,
    method: str = "bipo",
    cfg: BipoConfig | None = None,
    recipe: Recipe | None = None,
    engine: str = "fast",
    limit: int | None = None,
    resume: bool = False,
    progress: bool = True,
    system: str | None = None,
    seeds: int = 1,
) -> tuple[SteeringVector, dict[str, Any]]:
    """Train one vector from a pairs file and save it (+ its training log beside it).

    ``cfg`` defaults to the model's recipe; the vector's metadata records the recipe and what
    ``cfg`` overrode. A checkpoint is written beside ``out`` each epoch and removed at the end.
    ``seeds`` > 1 (BiPO): that many seeds in one pass (``steerkit.train.seeds``); the medoid is
    saved at ``out`` with their agreement in its metadata, the others in ``.seeds/`` beside it.
    """
    safe_name(behavior)
    if method not in METHODS:
        raise DataError(f"unknown method {method!r}", where="method", fix="use bipo or caa")
    recipe = recipe or recipe_for(lm.name, len(decoder_layers(lm.model)))
    cfg = cfg or recipe.train
    t0 = time.perf_counter()
    pairs = load_pairs(train_file, limit)
    max_len = getattr(lm.model.config, "max_position_embeddings", None)
    enc = encode_pairs(lm.tokenizer, pairs, system=system, max_length=max_len)
    data = {
        "behavior": behavior,
        "data_file": str(train_file),
        "data_sha256": sha256_file(train_file),
        "system_prompt": system,
        "recipe": {"name": recipe.name, "overrides": recipe.overrides(cfg)},
    }
    source = source_of(train_file)
    if source and source.get("generated"):  # pairs a teacher wrote: how, carried on to the catalog
        data["generated"] = summary_of(source["generated"])
    out = Path(out)
    if method == "bipo" and seeds > 1:
        vector = _train_seeds(lm, enc, cfg, out, seeds, engine, progress, data)
    elif method == "bipo":
        result = bipo.train(
            lm.model,
            enc,
            cfg,
            lm.tokenizer.pad_token_id,
            engine=engine,
            model_name=lm.name,
            checkpoint=out.with_suffix(".ckpt"),
            resume=resume,
            progress=progress,
            extra_meta=data,
        )
        vector = result.vector
        bipo.write_log_csv(out.with_suffix(".log.csv"), result.log)
    else:
        vector = train_caa(lm.model, enc, cfg.layer, lm.tokenizer.pad_token_id, model_name=lm.name)
        vector.meta.update(data)
    sha = vector.save(out)  # no wall time in the file: the same training gives the same bytes
    out.with_suffix(".ckpt").unlink(missing_ok=True)  # the finished vector supersedes the last epoch's checkpoint
    return vector, {"path": str(out), "sha256": sha, "seconds": round(time.perf_counter() - t0, 2)}


def _train_seeds(
    lm: LoadedModel,
    enc: list,
    cfg: BipoConfig,
    out: Path,
    k: int,
    engine: str,
    progress: bool,
    data: dict[str, Any],
) -> SteeringVector:
    """K seeds of one recipe in one pass; the medoid ships (returned), the others are kept in ``.seeds/``."""
    numbers = [cfg.seed + i for i in range(k)]
    jobs = [bipo.Job(enc, dataclasses.replace(cfg, seed=s), extra_meta=data) for s in numbers]
    results = bipo.train_many(
        lm.model, jobs, lm.tokenizer.pad_token_id, engine=engine, model_name=lm.name, progress=progress
    )
    vectors = [r.vector for r in results]
    info = agreement(vectors, numbers)
    shipped = numbers.index(info["shipped"])
    for s, path in seed_paths(out, numbers).items():
        vectors[numbers.index(s)].save(path)
    bipo.write_log_csv(out.with_suffix(".log.csv"), results[shipped].log)
    vector = vectors[shipped]
    vector.meta["seeds"] = info
    return vector


@dataclass
class Trained:
    """The vectors one train stage wrote (BiPO first), and where."""

    folder: Path
    vectors: dict[str, SteeringVector]
    files: dict[str, Path]


def train(
    pairs_file: str | Path,
    out_dir: str | Path,
    *,
    model: str | LoadedModel,
    behavior: str,
    cfg: BipoConfig | None = None,
    limit: int | None = None,
    baseline: str = "caa",
    seeds: int = 1,
    root: str | Path = ".",
    progress: bool = True,
) -> Trained:
    """BiPO (and the CAA baseline) for one behavior into ``out_dir`` (replaced as a whole on success);
    ``seeds`` > 1 trains that many BiPO seeds and ships the medoid (``train_vector``)."""
    if baseline not in BASELINES:
        raise DataError(f"unknown baseline {baseline!r}", where="baseline", fix="use caa or none")
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    recipe = recipe_for(lm.name, len(decoder_layers(lm.model)))
    cfg = cfg or recipe.train
    final = Path(out_dir)
    staging = scratch_dir(staging_dir(root), f"{final.parent.name}.{final.name}.")  # a killed run's is swept
    methods = ["bipo"] + (["caa"] if baseline == "caa" else [])
    files = {
        m: staging / (f"L{cfg.layer}.safetensors" if m == "bipo" else f"L{cfg.layer}.{m}.safetensors") for m in methods
    }
    try:
        vectors = {
            m: train_vector(
                lm,
                pairs_file,
                files[m],
                behavior=behavior,
                method=m,
                cfg=cfg,
                recipe=recipe,
                limit=limit,
                progress=progress,
                seeds=seeds if m == "bipo" else 1,
            )[0]
            for m in methods
        }
        replace_dir(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Trained(final, vectors, {m: final / f.name for m, f in files.items()})
