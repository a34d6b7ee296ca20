"""The ``steerkit`` command line: one sub-command per stage, thin over ``steerkit.stages``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_errors import fail as _fail
from .errors import SteerkitError

app = typer.Typer(help="Make, check and ship LLM steering vectors with BiPO.\n\n"
                       "Typical order: `data fetch` → `data prepare` → `train` → `generate`.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Fetch registered datasets and prepare contrastive pairs.", no_args_is_help=True)
vector_app = typer.Typer(help="Inspect and convert steering-vector files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(vector_app, name="vector")
console = Console()

DEFAULT_MODEL = "smollm2-135m-instruct"
ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m",
                        help="Embedded name, local folder, .gguf file or hub id.")


def main() -> None:
    try:
        app()
    except SteerkitError as exc:
        _fail(exc)


# ------------------------------------------------------------------------------------------ data
@data_app.command("fetch")
def data_fetch(names: List[str] = typer.Argument(..., help="Source or group names from data/sources.yaml, e.g. bipo."),
               dest: Path = typer.Option(Path("data/raw"), help="Folder to fetch into."),
               registry: Path = typer.Option(Path("data/sources.yaml"), help="The source registry."),
               force: bool = typer.Option(False, help="Fetch again even if a verified copy exists.")) -> None:
    """Fetch registered datasets, verifying each sha256 (uses $STEERKIT_DATA_MIRROR when set)."""
    from .sources import fetch_many

    try:
        paths = fetch_many(names, dest_root=dest, force=force, registry_path=registry)
    except SteerkitError as exc:
        _fail(exc)
    for p in paths:
        console.print(f"[green]✓[/] {p}")


@data_app.command("prepare")
def data_prepare(behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
                 inputs: List[Path] = typer.Argument(..., help="Data files (BiPO CSV, Anthropic JSONL, CAA JSON, …)."),
                 test: List[Path] = typer.Option([], "--test", help="Files to use as the test split instead of a random split."),
                 fmt: str = typer.Option("auto", "--format", help="Input format (auto sniffs it)."),
                 test_fraction: float = typer.Option(0.2, help="Share of questions held out when no --test is given."),
                 seed: int = typer.Option(0, help="Split seed."),
                 root: Path = typer.Option(Path("."), help="Project root (writes data/pairs/<behavior>/).")) -> None:
    """Validate and split a behavior's data into data/pairs/<behavior>/{train,test}.jsonl."""
    from .stages import prepare

    try:
        res = prepare(behavior, inputs, root, fmt, test_fraction, seed, test_inputs=test)
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"{behavior}: {res.n_train} train, {res.n_test} test pairs → {res.train.parent}  "
                  f"(dropped: {res.dropped})")


# ----------------------------------------------------------------------------------------- train
@app.command()
def train(data: Path = typer.Option(..., "--data", "-d", help="Training pairs (JSONL from `data prepare`, or any reader format)."),
          behavior: str = typer.Option(..., "--behavior", "-b", help="Behavior name recorded in the vector."),
          out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors path."),
          model: str = ModelOpt,
          method: str = typer.Option("bipo", help="bipo (preference-optimised) or caa (mean difference)."),
          layer: int = typer.Option(15, help="Decoder layer whose output is steered (0-based)."),
          epochs: int = typer.Option(20, help="Passes over the training pairs."),
          lr: float = typer.Option(5e-4, help="AdamW learning rate (short runs on small models want ~5e-3)."),
          beta: float = typer.Option(0.1, help="BiPO β."),
          batch_size: int = typer.Option(4, help="Pairs per step (one direction d per step)."),
          warmup: int = typer.Option(100, help="Linear warm-up steps before the cosine decay."),
          weight_decay: float = typer.Option(0.05, help="AdamW weight decay."),
          seed: int = typer.Option(0, help="Seed for batch order and directions."),
          limit: Optional[int] = typer.Option(None, help="Use only the first N pairs."),
          engine: str = typer.Option("fast", help="fast (cached, exact) or plain (the reference implementation)."),
          resume: bool = typer.Option(False, help="Continue from the checkpoint beside --out."),
          device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … (default: cuda if present)."),
          dtype: Optional[str] = typer.Option(None, help="fp32, bf16 (default: bf16 on CUDA, fp32 on CPU).")) -> None:
    """Train a steering vector for one behavior and save it with full provenance metadata."""
    from .bipo import BipoConfig
    from .models import load_model
    from .stages import train_vector

    try:
        lm = load_model(model, device=device, dtype=dtype)
        cfg = BipoConfig(layer=layer, beta=beta, lr=lr, weight_decay=weight_decay, warmup_steps=warmup,
                         batch_size=batch_size, epochs=epochs, seed=seed)
        vec, info = train_vector(lm, data, out, behavior=behavior, method=method, cfg=cfg, engine=engine,
                                 limit=limit, resume=resume)
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"[green]✓[/] {method} vector for {behavior} at layer {layer}: |v| = {vec.norm():.3f}, "
                  f"{info['seconds']} s → {info['path']}")


# -------------------------------------------------------------------------------------- generate
@app.command()
def generate(vector: List[Path] = typer.Option(..., "--vector", "-v", help="Vector file(s); several are summed."),
             prompt: List[str] = typer.Option([], "--prompt", "-p", help="A prompt (repeatable)."),
             prompts_file: Optional[Path] = typer.Option(None, help="A text file with one prompt per line."),
             multiplier: List[str] = typer.Option(["-2", "0", "2"], "--multiplier", "-x", help="Multipliers (repeatable)."),
             model: str = ModelOpt,
             max_new_tokens: int = typer.Option(48, help="Tokens to generate per answer."),
             device: Optional[str] = typer.Option(None, help="cpu or cuda.")) -> None:
    """Generate greedy answers side by side for each multiplier."""
    from .generate import steered_generations
    from .models import load_model
    from .vector import SteeringVector, _as_float

    try:
        mults = [_as_float(m) for m in multiplier]
        prompts = list(prompt) + (_read_lines(prompts_file) if prompts_file else [])
        if not prompts:
            raise SteerkitError("no prompts given", fix="pass --prompt TEXT or --prompts-file FILE")
        vecs = [SteeringVector.load(v) for v in vector]
        lm = load_model(model, device=device)
        gens = steered_generations(lm.model, lm.tokenizer, vecs, mults, prompts, max_new_tokens)
    except SteerkitError as exc:
        _fail(exc)
    table = Table("prompt", *[f"m = {m:g}" for m in mults], show_lines=True)
    for p in prompts:
        table.add_row(p, *[g.text for m in mults for g in gens if g.prompt == p and g.multiplier == m])
    console.print(table)


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SteerkitError(f"cannot read prompts ({exc})", where=str(path), fix="give a UTF-8 text file") from None


# ---------------------------------------------------------------------------------------- vector
@vector_app.command("info")
def vector_info(path: Path, as_json: bool = typer.Option(False, "--json", help="Print the metadata as JSON.")) -> None:
    """Show a vector's layers, norm and metadata."""
    from .fileio import sha256_file
    from .vector import SteeringVector

    try:
        vec = SteeringVector.load(path)
    except SteerkitError as exc:
        _fail(exc)
    info = {"file": str(path), "sha256": sha256_file(path), "layers": vec.layer_ids, "hidden_size": vec.hidden_size,
            "norm": round(vec.norm(), 6), "meta": vec.meta}
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    table = Table(show_header=False)
    for k, v in info.items():
        if k != "meta":
            table.add_row(k, str(v))
    for k, v in sorted(vec.meta.items()):
        table.add_row(f"meta.{k}", json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    console.print(table)


@vector_app.command("import-pt")
def vector_import_pt(path: Path, layer: int = typer.Option(..., help="Layer the official vector was trained at."),
                     out: Path = typer.Option(..., "--out", "-o"),
                     behavior: str = typer.Option("unknown"), model: str = typer.Option("unknown")) -> None:
    """Convert an official BiPO .pt vector (loaded weights-only, never unpickled) to safetensors."""
    from .vector import SteeringVector

    try:
        vec = SteeringVector.from_bipo_pt(path, layer, behavior=behavior, model=model)
        vec.save(out)
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"[green]✓[/] {out} (layer {layer}, |v| = {vec.norm():.3f})")


# ------------------------------------------------------------------------------------------ demo
@app.command()
def demo(model: str = ModelOpt,
         root: Path = typer.Option(Path("."), help="Project root."),
         epochs: int = typer.Option(4, help="BiPO epochs on the seed power-seeking pairs."),
         layer: int = typer.Option(15, help="Layer to steer."),
         lr: float = typer.Option(5e-3, help="Learning rate (short runs on the 135M model need 5e-3)."),
         train_vector_: bool = typer.Option(True, "--train/--no-train", help="Also train and try a vector.")) -> None:
    """The main job on the embedded default: seed data → pairs → BiPO vector → steered answers."""
    from .demo import run_demo

    try:
        run_demo(model=model, root=root, epochs=epochs, layer=layer, lr=lr, train=train_vector_, console=console)
    except SteerkitError as exc:
        _fail(exc)


# -------------------------------------------------------------------------------------- evaluate
_EVAL_MULTIPLIERS = ["-2", "-1", "-0.5", "0", "0.5", "1", "2"]  # = evaluate.DEFAULT_MULTIPLIERS (kept light to import)


@app.command()
def evaluate(vector: Path = typer.Option(..., "--vector", "-v", help="The steering vector to evaluate."),
             test: Path = typer.Option(..., "--test", "-t", help="Held-out pairs (JSONL from `data prepare`, or any reader format)."),
             model: str = ModelOpt,
             multiplier: List[str] = typer.Option(_EVAL_MULTIPLIERS, "--multiplier", "-x", help="Multipliers (repeatable)."),
             judge: str = typer.Option("embedding", help="Open-ended judge: embedding, refusal, openai or none."),
             n_open: int = typer.Option(8, help="Held-out questions answered freely under each multiplier and judged."),
             baseline: Optional[Path] = typer.Option(None, help="A second vector (e.g. CAA), compared at this vector's norm."),
             out: Optional[Path] = typer.Option(None, "--out", "-o",
                                                help="Report JSON (default reports/eval/<model>/<behavior>.json); the PNG goes beside it."),
             limit: Optional[int] = typer.Option(None, help="Use only the first N test pairs."),
             texts: Optional[Path] = typer.Option(None, help="Neutral texts for perplexity, one per line (default data/seed/neutral.txt)."),
             batch_size: int = typer.Option(8, help="Pairs or texts per forward pass."),
             max_new_tokens: int = typer.Option(40, help="Tokens per open-ended answer."),
             device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … (default: cuda if present)."),
             dtype: Optional[str] = typer.Option(None, help="fp32, bf16 (default: bf16 on CUDA, fp32 on CPU).")) -> None:
    """Show that a vector steers on held-out pairs: margins, A/B probability, fluency cost, judged answers."""
    from .evaluate import evaluate_vector, neutral_texts, write_report
    from .judges import make_judge
    from .layout import report_path
    from .models import load_model
    from .stages import load_pairs
    from .vector import SteeringVector, _as_float

    try:
        mults = [_as_float(m) for m in multiplier]
        vec = SteeringVector.load(vector)
        base = SteeringVector.load(baseline) if baseline else None
        behavior, method = vec.meta.get("behavior"), vec.meta.get("method")
        if out is None:
            if not behavior:
                raise SteerkitError("the vector's metadata names no behavior, so the report path cannot be derived",
                                    where=str(vector), fix="pass --out reports/eval/<model>/<name>.json")
            name = behavior if method in (None, "bipo") else f"{behavior}.{method}"
            out = report_path(".", "eval", model, name)
        pairs = load_pairs(test, limit)
        neutral = neutral_texts(texts)
        chosen = None if judge.strip().lower() == "none" else (
            make_judge(judge, behavior=behavior) if judge.strip().lower() == "openai" else make_judge(judge))
        lm = load_model(model, device=device, dtype=dtype)
        report = evaluate_vector(lm.model, lm.tokenizer, vec, pairs, mults, judge=chosen, n_open=n_open,
                                 texts=neutral, compare=base, batch_size=batch_size, max_new_tokens=max_new_tokens)
        report.update(model=lm.name, vector_file=str(vector), test_file=str(test),
                      baseline_file=str(baseline) if baseline else None)
        json_path, png_path = write_report(report, out)
    except SteerkitError as exc:
        _fail(exc)
    for part, title in ((report, "vector"), (report.get("baseline"), "baseline")):
        if part:
            console.print(_eval_table(part, f"{title}: {part['vector'].get('method') or '?'} "
                                            f"(|v| = {part['vector']['norm']:.3f})"))
    s = report["summary"]
    console.print("summary: " + ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
                                         for k, v in s.items()))
    console.print(f"[green]✓[/] {json_path}\n[green]✓[/] {png_path}")


def _eval_table(part: dict, title: str) -> Table:
    def at(rows: list, m: float, key: str) -> str:
        v = next((r.get(key) for r in rows or [] if r["multiplier"] == m), None)
        return "—" if v is None else f"{v:.3f}"

    judged = (part.get("open_ended") or {}).get("curve")
    table = Table("m", "margin", "/token", "win", "p(A/B)", "ppl", "fluency",
                  f"judge: {part['open_ended']['judge']}" if judged else "judge", title=title)
    for m in sorted({r["multiplier"] for r in part["margin"]}):
        table.add_row(f"{m:g}", at(part["margin"], m, "margin"), at(part["margin"], m, "margin_per_token"),
                      at(part["margin"], m, "win_fraction"), at(part["ab"], m, "p_matching"),
                      at(part["perplexity"], m, "perplexity"), at(part["perplexity"], m, "fluency_cost"),
                      at(judged, m, "judge_score"))
    return table


@app.command()
def export(vector: Path = typer.Argument(..., help="A steerkit vector (.safetensors)."),
           out: Path = typer.Option(..., "--out", "-o", help="Output .gguf path."),
           multiplier: str = typer.Option("1", "--multiplier", "-x", help="Baked-in scale (llama.cpp can rescale too)."),
           fmt: str = typer.Option("llamacpp", "--format", help="Target runtime; llamacpp = control-vector GGUF.")) -> None:
    """Export a vector for llama.cpp: `llama-cli --control-vector OUT.gguf` (or --control-vector-scaled)."""
    from .export import to_llamacpp_gguf
    from .vector import SteeringVector, _as_float

    try:
        if fmt != "llamacpp":
            raise SteerkitError(f"unknown export format {fmt!r}", fix="use --format llamacpp")
        vec = SteeringVector.load(vector)
        path = to_llamacpp_gguf(vec, out, multiplier=_as_float(multiplier))
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"[green]✓[/] {path} (llama.cpp control vector, layers {vec.layer_ids})")


# ------------------------------------------------------------------------- sub-apps of other modules
# Each area's commands live in its own module (cli_<area>.py) and are registered below, one line each.
from .cli_catalog import catalog_app  # noqa: E402
app.add_typer(catalog_app, name="catalog")
from .cli_calibrate import register as _register_calibrate  # noqa: E402
_register_calibrate(app)
from .cli_transfer import register as _register_transfer  # noqa: E402
_register_transfer(app)
from .cli_pipeline import pipeline_app  # noqa: E402
app.add_typer(pipeline_app, name="pipeline")


if __name__ == "__main__":  # pragma: no cover
    main()
