"""``steerkit train`` and ``steerkit calibrate``: one vector from training pairs (thin over steerkit.stages.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..recipes import RECIPES, official
from ..stages.options import METHODS, EvaluateOptions, TrainOptions
from ..train.config import BipoConfig
from .options import (
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    command,
    config_from,
    console,
    knob_option,
    recipe_default,
)

_EMBEDDED = next(iter(RECIPES.values()))


def _bipo(name: str) -> object:
    """A BipoConfig knob whose default is the model's recipe."""
    if name == "layer":
        shown = f"from the model's recipe: {_EMBEDDED.name} {_EMBEDDED.train.layer}, other models 15/32 of the depth"
    elif getattr(_EMBEDDED.train, name) != getattr(official().train, name):
        shown = recipe_default(BipoConfig, name, getattr(_EMBEDDED.train, name), getattr(official().train, name))
    else:
        shown = None
    return knob_option(BipoConfig, name, default=shown)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(calibrate)


@command()
def train(
    ctx: typer.Context,
    data: Path = typer.Option(
        ..., "--data", "-d", help="Training pairs (JSONL from `data prepare`, or any reader format)."
    ),
    behavior: str = typer.Option(..., "--behavior", "-b", help="Behavior name recorded in the vector."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors path."),
    model: str = ModelOpt,
    method: str = typer.Option(
        "bipo", help="bipo (preference-optimised) or caa (mean difference). One of: " + ", ".join(METHODS) + "."
    ),
    layer: Optional[int] = _bipo("layer"),
    lr: Optional[float] = _bipo("lr"),
    epochs: Optional[int] = _bipo("epochs"),
    warmup_steps: Optional[int] = _bipo("warmup_steps"),
    beta: Optional[float] = _bipo("beta"),
    batch_size: Optional[int] = _bipo("batch_size"),
    weight_decay: Optional[float] = _bipo("weight_decay"),
    seed: Optional[int] = _bipo("seed"),
    bucket: Optional[bool] = _bipo("bucket"),
    limit: Optional[int] = knob_option(TrainOptions, "limit"),
    seeds: Optional[int] = knob_option(TrainOptions, "seeds"),
    engine: str = typer.Option(
        "fast",
        help="fast (cached, exact), compiled (fast with its step through torch.compile: CUDA graphs on a GPU, "
        "worth it for long runs; the first steps compile) or plain (the reference implementation).",
    ),
    resume: bool = typer.Option(False, help="Continue from the checkpoint beside --out."),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Train a steering vector for one behavior; defaults come from the model's recipe (see --help of each option).

    The vector's metadata records the recipe and every option that overrode it. With no options
    besides -d/-b/-o, the embedded model trains exactly what the pipeline (params.yaml) trains for it.
    """
    from ..models import decoder_layers, load_model
    from ..recipes import recipe_for
    from ..stages import train as train_stage

    lm = load_model(model, device=device, dtype=dtype)
    recipe = recipe_for(lm.name, len(decoder_layers(lm.model)))
    cfg = config_from(recipe.train, ctx.params)
    vec, info = train_stage.train_vector(
        lm,
        data,
        out,
        behavior=behavior,
        method=method,
        cfg=cfg,
        recipe=recipe,
        engine=engine,
        limit=limit,
        resume=resume,
        seeds=seeds or 1,
    )
    overrides = recipe.overrides(cfg)
    console.print(
        f"[green]✓[/] {method} vector for {behavior} at layer {cfg.layer}: |v| = {vec.norm():.3f}, "
        f"{info['seconds']} s → {info['path']}  (recipe {recipe.name}"
        + (f", overrides {overrides}" if overrides else "")
        + ")",
        highlight=False,
    )
    if isinstance(vec.meta.get("seeds"), dict):
        agree = vec.meta["seeds"]
        console.print(
            f"seeds {agree['seeds']}: smallest cosine between their directions {agree['min_cosine']:.3f}; "
            f"shipped seed {agree['shipped']}, {agree['why']} (the others: .seeds/ beside it)",
            highlight=False,
        )


@command()
def calibrate(
    data: Path = typer.Option(..., "--data", "-d", help="Training pairs; a validation split is carved from them."),
    behavior: str = typer.Option(..., "--behavior", "-b", help="Behavior name recorded in the vector."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to save the chosen vector (.safetensors)."),
    model: str = ModelOpt,
    layers: str = typer.Option("10,15,20", help="Layers to try, comma-separated."),
    lrs: str = typer.Option("5e-3", help="Learning rates to try, comma-separated."),
    epochs: str = typer.Option("2", help="Epoch counts to try, comma-separated."),
    val_fraction: float = typer.Option(0.2, help="Share of questions held out for validation."),
    budget_s: Optional[float] = typer.Option(None, help="Stop trying new candidates after this many seconds."),
    limit: Optional[int] = knob_option(TrainOptions, "limit"),
    seed: int = typer.Option(0, help="Split and training seed."),
    texts: Optional[Path] = knob_option(EvaluateOptions, "texts"),
) -> None:
    """Sweep layers (and lr/epochs within a budget), keep the best vector, record its safe |m| (the largest whose
    fluency cost on the neutral texts stays under 10 %)."""
    import dataclasses

    from ..data.checks import split
    from ..data.readers import load_pairs
    from ..data.texts import neutral_texts
    from ..eval.calibrate import calibrate as run
    from ..fileio import atomic_write_json
    from ..layout import safe_name
    from ..models import decoder_layers, load_model
    from ..recipes import recipe_for

    safe_name(behavior)
    pairs = load_pairs(data, limit)
    train_pairs, val = split(pairs, test_fraction=val_fraction, seed=seed)
    lm = load_model(model)
    base = dataclasses.replace(recipe_for(lm.name, len(decoder_layers(lm.model))).train, seed=seed)
    res = run(
        lm.model,
        lm.tokenizer,
        train_pairs,
        val,
        layers=[int(x) for x in _numbers(layers, "--layers")],
        lrs=_numbers(lrs, "--lrs"),
        epochs=[int(x) for x in _numbers(epochs, "--epochs")],
        budget_s=budget_s,
        base=base,
        model_name=lm.name,
        texts=neutral_texts(texts),
        progress=True,
    )
    res.vector.meta.update(behavior=behavior, data_file=str(data))
    res.vector.save(out)
    atomic_write_json(out.with_suffix(".calibration.json"), res.vector.meta["calibration"])
    table = Table(
        "layer",
        "lr",
        "epochs",
        "val margin swing (±1)",
        "win swing",
        "fluency cost |m|=1",
        "eligible",
        title=f"calibration on {len(val)} validation pairs",
    )
    for c in res.candidates:
        table.add_row(
            str(c.layer),
            f"{c.lr:g}",
            str(c.epochs),
            f"{c.val_margin_swing_at_1:+.2f}",
            f"{c.val_win_swing_at_1:+.2f}",
            f"{c.fluency_cost_at_1:.1%}",
            "yes" if c.eligible else "no",
        )
    console.print(table)
    console.print(
        f"[green]✓[/] chose layer {res.best.layer}, lr {res.best.lr:g}, {res.best.epochs} epochs; "
        f"safe multipliers ±{res.safe_multiplier:g} → {out}"
    )


def _numbers(text: str, what: str) -> list[float]:
    from ..errors import SteerkitError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SteerkitError(
            f"{what} must be comma-separated numbers, got {text!r}", where=what, fix="e.g. 10,15,20"
        ) from None
