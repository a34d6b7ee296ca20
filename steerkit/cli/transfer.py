"""``steerkit derive lora``, ``steerkit transfer``, ``steerkit compose``: derived models, transfer and composition
(thin over the derive, transfer and compose stages)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import typer

from ..eval.config import ComposeConfig, TransferConfig
from ..recipes import RECIPES, official
from ..stages.options import ComposeOptions, DeriveOptions, TransferOptions
from ..train.config import LoraConfig
from .options import (
    DeviceOpt,
    DtypeOpt,
    behavior_files,
    command,
    config_from,
    console,
    floats,
    knob_option,
    not_a_pipeline_output,
    recipe_default,
    warn,
)

derive_app = typer.Typer(help="Make derived models (LoRA fine-tunes) to test transfer against.", no_args_is_help=True)
_EMBEDDED = next(iter(RECIPES.values()))


def register(app: typer.Typer) -> None:
    app.add_typer(derive_app, name="derive")
    app.command("transfer")(transfer)
    app.command("compose")(compose)


def _lora(name: str) -> object:
    """A LoraConfig knob whose default is the model's recipe."""
    mine, theirs = getattr(_EMBEDDED.derive, name), getattr(official().derive, name)
    return knob_option(
        LoraConfig, name, default=recipe_default(LoraConfig, name, mine, theirs) if mine != theirs else None
    )


@derive_app.command("lora")
@command()
def derive_lora(
    ctx: typer.Context,
    data: list[Path] = typer.Option(
        ...,
        "--data",
        "-d",
        help="Training data (repeatable): pairs (JSONL/CSV/…: "
        "chat-formatted question + answer) or .txt (one text per line).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Adapter folder to write (replaced as a whole)."),
    model: str = typer.Option(
        _EMBEDDED.name, "--model", "-m", help="Base model: embedded name, folder, .gguf or hub id."
    ),
    steps: Optional[int] = _lora("steps"),
    lr: Optional[float] = _lora("lr"),
    r: Optional[int] = _lora("r"),
    alpha: Optional[float] = _lora("alpha"),
    dropout: Optional[float] = _lora("dropout"),
    target_modules: Optional[list[str]] = _lora("target_modules"),
    answers: Optional[str] = _lora("answers"),
    batch_size: Optional[int] = _lora("batch_size"),
    max_length: Optional[int] = _lora("max_length"),
    seed: Optional[int] = _lora("seed"),
    limit: Optional[int] = knob_option(DeriveOptions, "limit"),
    probe_texts: Optional[Path] = knob_option(DeriveOptions, "probe_texts"),
    report: Optional[Path] = typer.Option(None, help="Also write the derive JSON here (e.g. a DVC metrics file)."),
    require_moved: bool = typer.Option(False, help="Exit with status 3 if the model did not move."),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Fine-tune a LoRA adapter on a copy of the model and record how far it moved it."""
    from ..models import load_model
    from ..recipes import recipe_for
    from ..stages import derive as derive_stage

    lm = load_model(model, device=device, dtype=dtype)
    cfg = config_from(recipe_for(lm.name).derive, ctx.params)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the unmoved warning is printed below
        derived = derive_stage.derive(
            data, out, model=lm, cfg=cfg, limit=limit, probe_texts=probe_texts, report=report, progress=True
        )
    s, t = derived.shift, derived.info["train"]
    console.print(
        f"[green]✓[/] LoRA r={cfg.r} on {', '.join(derived.info['lora']['target_modules'])}: {t['steps']} steps, "
        f"loss {t['loss_first'] or float('nan'):.3f} → {t['loss_last'] or float('nan'):.3f}, "
        f"{time.perf_counter() - t0:.1f} s → {out}"
    )
    console.print(
        f"moved: ppl {s['ppl_base']:.3f} → {s['ppl_derived']:.3f} ({s['ppl_change']:+.2%}), "
        f"KL(base‖derived) = {s['kl']:.3e} nats/token"
    )
    if not derived.moved:
        warn(
            "the derived model did not move (|ppl change| < 1 % and KL < 1e-4); a transfer test against it proves "
            "nothing — train more --steps or with a higher --lr"
        )
        if require_moved:
            raise typer.Exit(3)


@command()
def transfer(
    ctx: typer.Context,
    vector: Path = typer.Option(..., "--vector", "-v", help="The base model's steering vector."),
    targets: list[str] = typer.Option(
        ..., "--target", "-T", help="Target (repeatable): a model spec or a LoRA adapter folder."
    ),
    test: Path = typer.Option(..., "--test", "-t", help="Held-out pairs."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Report JSON (default reports/transfer/<model>/<behavior>.json); PNG and markdown go beside it.",
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Base model (default: the one in the vector's metadata)."
    ),
    multipliers: Optional[list[str]] = knob_option(TransferConfig, "multipliers", "-x"),
    merged: Optional[bool] = knob_option(TransferConfig, "merged"),
    batch_size: Optional[int] = knob_option(TransferConfig, "batch_size"),
    limit: Optional[int] = knob_option(TransferOptions, "limit"),
    probe_texts: Optional[Path] = knob_option(TransferOptions, "probe_texts"),
    direct: list[str] = typer.Option(
        [],
        "--direct-vector",
        help="[TARGET=]FILE: a vector trained directly "
        "on a target; its cosine with --vector is reported per shared layer.",
    ),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Check that a vector trained on one model steers its LoRA-tuned or related models (retention per target)."""
    from ..eval.transfer import markdown_table
    from ..stages import transfer as transfer_stage

    cfg = config_from(TransferConfig(), ctx.params)
    if out is None:  # the default path: refused if the project's pipeline owns it
        from ..models import EMBEDDED_DEFAULT
        from ..stages.evaluate import default_out
        from ..vector import SteeringVector

        vec = SteeringVector.load(vector)
        spec = model or vec.meta.get("model") or EMBEDDED_DEFAULT
        out = not_a_pipeline_output(default_out(vec, str(vector), spec, ".", "transfer"), Path("."), "--out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the report's warnings are printed below
        res = transfer_stage.transfer(
            vector,
            targets,
            test,
            out,
            model=model,
            cfg=cfg,
            limit=limit,
            direct=direct,
            probe_texts=probe_texts,
            device=device,
            dtype=dtype,
        )
    console.print(markdown_table(res.report), markup=False, highlight=False)
    for name, c in res.report.get("consistency", {}).items():
        console.print(f"{name}: unmerged vs merged margins differ by ≤ {c['max_rel_margin_diff']:.2e} (relative)")
    for w in res.report["warnings"]:
        warn(w)
    console.print(f"[green]✓[/] {res.json}\n[green]✓[/] {res.png}\n[green]✓[/] {res.markdown}")


@command(extra={"tests": "--test", "vector_files": "--vector", "weights": "--weight"})
def compose(
    ctx: typer.Context,
    vector: list[Path] = typer.Option([], "--vector", "-v", help="A vector (repeatable)."),
    weight: list[str] = typer.Option(
        [], "--weight", "-w", help="Its weight (repeatable; one per --vector, default 1)."
    ),
    test: list[str] = typer.Option(
        [], "--test", "-t", help="BEHAVIOR=PAIRS (repeatable): a behavior's held-out pairs."
    ),
    case: Optional[str] = typer.Option(
        None,
        help="Run a built-in case instead (power-wealth, power-self-negation) "
        "from vectors/<model>/<behavior>/L<layer>… and data/pairs/<behavior>/test.jsonl.",
    ),
    layer: int = typer.Option(15, help="With --case: the vectors' layer."),
    method: str = typer.Option("bipo", help="With --case: the vectors' method."),
    root: Path = typer.Option(Path("."), help="Project root for --case and the default --out."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Report JSON (default reports/compose/<model>/<combo>.json); PNG beside it."
    ),
    name: Optional[str] = typer.Option(
        None, help="The combination's name (default: from the vectors' behaviors and weights)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model (default: the first vector's, else the embedded one)."
    ),
    multipliers: Optional[list[str]] = knob_option(ComposeConfig, "multipliers", "-x"),
    fluency: Optional[bool] = knob_option(ComposeConfig, "fluency"),
    batch_size: Optional[int] = knob_option(ComposeConfig, "batch_size"),
    limit: Optional[int] = knob_option(ComposeOptions, "limit"),
    probe_texts: Optional[Path] = knob_option(ComposeOptions, "probe_texts"),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Apply several vectors at once: each behavior's swing alone vs combined (interference matrix, kept)."""
    from ..errors import SteerkitError
    from ..eval.compose import markdown_table
    from ..stages import compose as compose_stage

    cfg = config_from(ComposeConfig(), ctx.params)
    if out is None and name:  # the default path of a named combination: refused if the pipeline owns it
        from ..layout import report_path
        from ..models import EMBEDDED_DEFAULT
        from ..vector import SteeringVector

        spec = model or (SteeringVector.load(vector[0]).meta.get("model") if vector else None) or EMBEDDED_DEFAULT
        out = not_a_pipeline_output(report_path(root, "compose", spec, name), root, "--out")
    common = dict(cfg=cfg, limit=limit, probe_texts=probe_texts, device=device, dtype=dtype)
    if case:
        if vector or test or weight:
            raise SteerkitError(
                "--case takes its vectors and tests from the project layout",
                fix="give either --case or --vector/--weight/--test",
            )
        res = compose_stage.run_case(case, root, model, layer, method, out=out, **common)
    else:
        if not vector or not test:
            raise SteerkitError("need --vector (repeatable) and --test BEHAVIOR=PAIRS (repeatable), or --case NAME")
        res = compose_stage.compose(
            vector,
            behavior_files(test, "--test"),
            floats(weight, "--weight") or None,
            out,
            model=model,
            root=root,
            name=name,
            **common,
        )
    console.print(markdown_table(res.report), markup=False, highlight=False)
    console.print(f"[green]✓[/] {res.json}\n[green]✓[/] {res.png}")
