"""CLI for derived models, transfer and composition: ``steerkit derive lora``, ``steerkit transfer``, ``steerkit compose``.

Thin over :mod:`steerkit.transfer` and :mod:`steerkit.compose`; registered on the main app by
:func:`register` (one line in ``cli.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .cli_errors import err_console, fail as _fail
from .errors import SteerkitError

console = Console()
DEFAULT_MODEL = "smollm2-135m-instruct"

derive_app = typer.Typer(help="Make derived models (LoRA fine-tunes) to test transfer against.", no_args_is_help=True)


def _floats(values: List[str]) -> list[float]:
    from .vector import _as_float

    return [_as_float(v) for v in values]


@derive_app.command("lora")
def derive_lora_cmd(
        data: List[Path] = typer.Option(..., "--data", "-d", help="Training data (repeatable): pairs (JSONL/CSV/…: "
                                        "chat-formatted question + answer) or .txt (one text per line)."),
        out: Path = typer.Option(..., "--out", "-o", help="Adapter folder to write (replaced as a whole)."),
        steps: int = typer.Option(..., "--steps", help="Optimiser steps."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model: embedded name, folder, .gguf or hub id."),
        lr: float = typer.Option(1e-4, help="AdamW learning rate."),
        r: int = typer.Option(8, "--r", help="LoRA rank."),
        alpha: float = typer.Option(16.0, help="LoRA alpha (scale = alpha / r)."),
        target_modules: Optional[str] = typer.Option(None, help="Comma-separated module names (default: q_proj,v_proj "
                                                     "or the architecture's attention projections)."),
        answers: str = typer.Option("both", help="For pairs: train on both answers, matching or not_matching."),
        batch_size: int = typer.Option(4, help="Examples per step."),
        max_length: int = typer.Option(256, help="Tokens per example (longer ones are cut)."),
        seed: int = typer.Option(0, help="Seed for the LoRA init and example order."),
        limit: Optional[int] = typer.Option(None, help="Use only the first N examples of each file."),
        probe_texts: Optional[Path] = typer.Option(None, help="Texts measuring how far the model moved (default data/seed/neutral.txt)."),
        report: Optional[Path] = typer.Option(None, help="Also write the derive JSON here (e.g. a DVC metrics file)."),
        require_moved: bool = typer.Option(False, help="Exit with status 3 if the model did not move."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda … (default: cuda if present)."),
        dtype: Optional[str] = typer.Option(None, help="fp32, bf16 (default: bf16 on CUDA, fp32 on CPU).")) -> None:
    """Fine-tune a LoRA adapter on a copy of the model and record how far it moved it."""
    import warnings

    from .models import load_model
    from .transfer import derive_files

    try:
        lm = load_model(model, device=device, dtype=dtype)
        modules = [m.strip() for m in target_modules.split(",") if m.strip()] if target_modules else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the unmoved warning is printed below
            derived = derive_files(lm, data, out, steps, lr=lr, r=r, alpha=alpha, target_modules=modules, seed=seed,
                                   batch_size=batch_size, max_length=max_length, answers=answers, limit=limit,
                                   probe_texts=probe_texts, report=report, progress=True)
    except SteerkitError as exc:
        _fail(exc)
    s, t = derived.shift, derived.info["train"]
    console.print(f"[green]✓[/] LoRA r={r} on {', '.join(derived.info['lora']['target_modules'])}: {t['steps']} steps, "
                  f"loss {t['loss_first'] or float('nan'):.3f} → {t['loss_last'] or float('nan'):.3f}, {t['seconds']} s → {out}")
    console.print(f"moved: ppl {s['ppl_base']:.3f} → {s['ppl_derived']:.3f} ({s['ppl_change']:+.2%}), "
                  f"KL(base‖derived) = {s['kl']:.3e} nats/token")
    if not derived.moved:
        err_console.print("[bold yellow]warning:[/] the derived model did not move (|ppl change| < 1 % and KL < 1e-4); "
                          "a transfer test against it proves nothing — train more steps or with a higher --lr")
        if require_moved:
            raise typer.Exit(3)


def transfer(vector: Path = typer.Option(..., "--vector", "-v", help="The base model's steering vector."),
             target: List[str] = typer.Option(..., "--target", "-T", help="Target (repeatable): a model spec or a LoRA adapter folder."),
             test: Path = typer.Option(..., "--test", "-t", help="Held-out pairs."),
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report JSON (default reports/transfer/<model>/<behavior>.json); "
                                                "PNG and markdown go beside it."),
             model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model (default: the one in the vector's metadata)."),
             multiplier: List[str] = typer.Option(["-2", "0", "2"], "--multiplier", "-x", help="Multipliers (repeatable)."),
             limit: Optional[int] = typer.Option(None, help="Use only the first N test pairs."),
             direct_vector: List[str] = typer.Option([], "--direct-vector", help="[TARGET=]FILE: a vector trained directly "
                                                     "on a target; its cosine with --vector is reported per shared layer."),
             merged: bool = typer.Option(True, "--merged/--no-merged", help="Also test each LoRA target merged."),
             probe_texts: Optional[Path] = typer.Option(None, help="Texts for the model-shift check (default data/seed/neutral.txt)."),
             batch_size: int = typer.Option(8, help="Pairs or texts per forward pass."),
             device: Optional[str] = typer.Option(None, help="cpu, cuda … (default: cuda if present)."),
             dtype: Optional[str] = typer.Option(None, help="fp32, bf16 (default: bf16 on CUDA, fp32 on CPU).")) -> None:
    """Check that a vector trained on one model steers its LoRA-tuned or related models (retention per target)."""
    import warnings

    from .transfer import markdown_table, transfer_files

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the report's warnings are printed below
            res = transfer_files(vector, target, test, out, model=model, multipliers=_floats(multiplier), limit=limit,
                                 direct=direct_vector, merged=merged, probe_texts=probe_texts, batch_size=batch_size,
                                 device=device, dtype=dtype)
    except SteerkitError as exc:
        _fail(exc)
    console.print(markdown_table(res.report), markup=False, highlight=False)
    for name, c in res.report.get("consistency", {}).items():
        console.print(f"{name}: unmerged vs merged margins differ by ≤ {c['max_rel_margin_diff']:.2e} (relative)")
    for w in res.report["warnings"]:
        err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    console.print(f"[green]✓[/] {res.json}\n[green]✓[/] {res.png}\n[green]✓[/] {res.markdown}")


def compose(vector: List[Path] = typer.Option([], "--vector", "-v", help="A vector (repeatable)."),
            weight: List[str] = typer.Option([], "--weight", "-w", help="Its weight (repeatable; one per --vector, default 1)."),
            test: List[str] = typer.Option([], "--test", "-t", help="BEHAVIOR=PAIRS (repeatable): a behavior's held-out pairs."),
            case: Optional[str] = typer.Option(None, help="Run a built-in case instead (power-wealth, power-self-negation) "
                                               "from vectors/<model>/<behavior>/L<layer>… and data/pairs/<behavior>/test.jsonl."),
            layer: int = typer.Option(15, help="With --case: the vectors' layer."),
            method: str = typer.Option("bipo", help="With --case: the vectors' method."),
            root: Path = typer.Option(Path("."), help="Project root for --case and the default --out."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report JSON (default reports/compose/<model>/<combo>.json); PNG beside it."),
            name: Optional[str] = typer.Option(None, help="The combination's name (default: from the vectors' behaviors and weights)."),
            model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the first vector's, else the embedded one)."),
            multiplier: List[str] = typer.Option(["-1", "0", "1"], "--multiplier", "-x", help="Multipliers of the weighted vectors (repeatable)."),
            limit: Optional[int] = typer.Option(None, help="Use only the first N test pairs per behavior."),
            fluency: bool = typer.Option(True, "--fluency/--no-fluency", help="Also measure perplexity of neutral texts per column."),
            probe_texts: Optional[Path] = typer.Option(None, help="Texts for the fluency check (default data/seed/neutral.txt)."),
            batch_size: int = typer.Option(8, help="Pairs or texts per forward pass."),
            device: Optional[str] = typer.Option(None, help="cpu, cuda … (default: cuda if present)."),
            dtype: Optional[str] = typer.Option(None, help="fp32, bf16 (default: bf16 on CUDA, fp32 on CPU).")) -> None:
    """Apply several vectors at once: each behavior's swing alone vs combined (interference matrix, kept)."""
    from .compose import compose_files, get_case, markdown_table, parse_tests, run_case

    try:
        kwargs = dict(multipliers=_floats(multiplier), limit=limit, fluency=fluency, probe_texts=probe_texts,
                      batch_size=batch_size, device=device, dtype=dtype)
        if case:
            if vector or test or weight:
                raise SteerkitError("--case takes its vectors and tests from the project layout",
                                    fix="give either --case or --vector/--weight/--test")
            res = run_case(get_case(case), root, model, layer, method, out=out, **kwargs)
        else:
            if not vector or not test:
                raise SteerkitError("need --vector (repeatable) and --test BEHAVIOR=PAIRS (repeatable), or --case NAME")
            res = compose_files(vector, parse_tests(test), _floats(weight) or None, out, model=model, root=root,
                                name=name, **kwargs)
    except SteerkitError as exc:
        _fail(exc)
    console.print(markdown_table(res.report), markup=False, highlight=False)
    console.print(f"[green]✓[/] {res.json}\n[green]✓[/] {res.png}")


def register(app: typer.Typer) -> None:
    """Add ``derive`` (sub-app), ``transfer`` and ``compose`` to the main CLI."""
    app.add_typer(derive_app, name="derive")
    app.command("transfer")(transfer)
    app.command("compose")(compose)
