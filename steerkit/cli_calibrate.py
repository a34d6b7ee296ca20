"""``steerkit calibrate``: pick layer / lr / epochs on a validation split and a safe multiplier range."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table


def _floats(text: str, what: str) -> list[float]:
    from .errors import SteerkitError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SteerkitError(f"{what} must be comma-separated numbers, got {text!r}", fix="e.g. 10,15,20") from None


def register(app: typer.Typer) -> None:
    from .cli import ModelOpt, _fail, console

    @app.command()
    def calibrate(data: Path = typer.Option(..., "--data", "-d", help="Training pairs; a validation split is carved from them."),
                  behavior: str = typer.Option(..., "--behavior", "-b", help="Behavior name recorded in the vector."),
                  out: Path = typer.Option(..., "--out", "-o", help="Where to save the chosen vector (.safetensors)."),
                  model: str = ModelOpt,
                  layers: str = typer.Option("10,15,20", help="Layers to try, comma-separated."),
                  lrs: str = typer.Option("5e-3", help="Learning rates to try, comma-separated."),
                  epochs: str = typer.Option("2", help="Epoch counts to try, comma-separated."),
                  val_fraction: float = typer.Option(0.2, help="Share of questions held out for validation."),
                  budget_s: Optional[float] = typer.Option(None, help="Stop trying new candidates after this many seconds."),
                  limit: Optional[int] = typer.Option(None, help="Use only the first N pairs."),
                  seed: int = typer.Option(0, help="Split and training seed.")) -> None:
        """Sweep layers (and lr/epochs within a budget), keep the best vector, record its safe |m|."""
        from .bipo import BipoConfig
        from .calibrate import calibrate as run
        from .errors import SteerkitError
        from .fileio import atomic_write_json
        from .layout import safe_name
        from .models import load_model
        from .pairs import split
        from .stages import load_pairs

        try:
            safe_name(behavior)
            pairs = load_pairs(data, limit)
            train, val = split(pairs, test_fraction=val_fraction, seed=seed)
            lm = load_model(model)
            res = run(lm.model, lm.tokenizer, train, val, layers=[int(x) for x in _floats(layers, "--layers")],
                      lrs=_floats(lrs, "--lrs"), epochs=[int(x) for x in _floats(epochs, "--epochs")],
                      budget_s=budget_s, base=BipoConfig(seed=seed, warmup_steps=10), model_name=lm.name, progress=True)
            res.vector.meta.update(behavior=behavior, data_file=str(data))
            res.vector.save(out)
            atomic_write_json(out.with_suffix(".calibration.json"), res.vector.meta["calibration"])
        except SteerkitError as exc:
            _fail(exc)
        table = Table("layer", "lr", "epochs", "val margin swing (±1)", "win swing", "fluency cost |m|=1", "eligible",
                      title=f"calibration on {len(val)} validation pairs")
        for c in res.candidates:
            table.add_row(str(c.layer), f"{c.lr:g}", str(c.epochs), f"{c.margin_swing:+.2f}", f"{c.win_swing:+.2f}",
                          f"{c.fluency_cost_at_1:.1%}", "yes" if c.eligible else "no")
        console.print(table)
        console.print(f"[green]✓[/] chose layer {res.best.layer}, lr {res.best.lr:g}, {res.best.epochs} epochs; "
                      f"safe multipliers ±{res.safe_multiplier:g} → {out}")
