"""``steerkit demo``: the short tour on the embedded default model, runnable with no network and no mirror.

Seed data → validated, split pairs (the prepare stage) → model summary → a BiPO and a CAA vector
for power-seeking (the train stage) → held-out steering curves, report + plot (the evaluate stage)
→ questions answered at m = −2, 0, +2. It works in its own folder (``demo/``): the pipeline's
outputs (``data/pairs``, ``vectors``, ``reports``, what DVC tracks and the gate judged) are never touched.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import DataError
from ..eval.metrics import metric
from .options import ModelOpt, command, console, not_a_pipeline_output

SEED_BEHAVIORS = ("power-seeking", "wealth-seeking")
TOUR_EPOCHS = 4  # fewer than the embedded recipe's 10, so that the tour takes a few minutes


def register(app: typer.Typer) -> None:
    app.command()(demo)


@command()
def demo(
    model: str = ModelOpt,
    root: Path = typer.Option(Path("."), help="Project root (reads data/seed/)."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="The tour's own folder: its pairs, vectors and reports go there, never over the pipeline's "
        "[default: ROOT/demo]",
    ),
    epochs: int = typer.Option(
        TOUR_EPOCHS, help="BiPO epochs (the model's recipe otherwise; fewer keep the tour short)."
    ),
    layer: Optional[int] = typer.Option(None, help="Layer to steer (default: the model's recipe)."),
    train: bool = typer.Option(True, "--train/--no-train", help="Also train and try a vector."),
) -> None:
    """The short tour on the embedded default: seed data → pairs → BiPO vector → curves → steered answers."""
    from ..data.readers import load_pairs
    from ..eval.config import EvalConfig
    from ..generate import steered_generations
    from ..layout import report_path, vector_dir
    from ..models import decoder_layers, hidden_size, load_model
    from ..packing import encode_pairs
    from ..recipes import recipe_for
    from ..stages import evaluate as evaluate_stage
    from ..stages import prepare as prepare_stage
    from ..stages import train as train_stage

    work = out if out is not None else root / "demo"
    if work.resolve() == root.resolve():
        raise DataError("the tour needs its own folder, not the project root", where="--out", fix="e.g. --out demo")
    not_a_pipeline_output(work / "data" / "pairs" / SEED_BEHAVIORS[0] / "train.jsonl", root, "--out")
    t0 = time.perf_counter()
    lm = load_model(model)
    console.print(
        f"[bold]model[/] {lm.name} ({lm.source}): {type(lm.model).__name__}, "
        f"{len(decoder_layers(lm.model))} layers, hidden {hidden_size(lm.model)}, "
        f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.0f}M params, "
        f"{next(lm.model.parameters()).dtype} on {next(lm.model.parameters()).device}, "
        f"loaded in {time.perf_counter() - t0:.1f} s"
    )
    table = Table("behavior", "train", "test", "dropped", "prompt tokens", "answer tokens", title="seed data")
    for behavior in SEED_BEHAVIORS:
        seed = root / "data" / "seed" / behavior
        prep = prepare_stage.prepare(behavior, [seed / "train.jsonl"], work, test_inputs=[seed / "test.jsonl"])
        enc = encode_pairs(lm.tokenizer, load_pairs(prep.train))
        prompt = sum(len(e.prompt) for e in enc) / len(enc)
        answer = sum(len(e.matching) + len(e.not_matching) for e in enc) / (2 * len(enc))
        table.add_row(
            behavior,
            str(prep.n_train),
            str(prep.n_test),
            str(sum(prep.dropped.values())),
            f"{prompt:.0f}",
            f"{answer:.0f}",
        )
    console.print(table)
    if not train:
        return
    behavior = SEED_BEHAVIORS[0]
    recipe = recipe_for(lm.name, len(decoder_layers(lm.model)))
    cfg = dataclasses.replace(recipe.train, epochs=epochs, layer=recipe.train.layer if layer is None else layer)
    pairs_dir = work / "data" / "pairs" / behavior
    t0 = time.perf_counter()
    trained = train_stage.train(
        pairs_dir / "train.jsonl", vector_dir(work, lm.name, behavior), model=lm, behavior=behavior, cfg=cfg, root=work
    )
    vec = trained.vectors["bipo"]
    console.print(
        f"[green]✓[/] BiPO {behavior} vector: |v| = {vec.norm():.2f}, final reward accuracy "
        f"{vec.meta['final_reward_acc']:.2f}, {time.perf_counter() - t0:.0f} s → {trained.files['bipo']}"
    )
    res = evaluate_stage.evaluate(
        trained.files["bipo"],
        pairs_dir / "test.jsonl",
        report_path(work, "eval", lm.name, behavior),
        model=lm,
        cfg=EvalConfig(),
        baseline=trained.files["caa"],
    )
    report = res.report
    etable = Table(
        "vector",
        "margin m=−2 → +2",
        "margin swing [95%]",
        "win fraction m=−2 → +2",
        "fluency cost |m|=1",
        title=f"held-out {behavior} pairs ({report['n_test']}), CAA scaled to BiPO's norm",
    )
    for label, rep in (("BiPO", report), ("CAA", report["baseline"])):
        first, last = rep["margin"][0], rep["margin"][-1]
        etable.add_row(
            label,
            f"{first['margin']:+.2f} → {last['margin']:+.2f}",
            metric("margin_swing").show(rep["summary"]["margin_swing"], rep["summary"]["margin_swing_ci95"]),
            f"{first['win_fraction']:.2f} → {last['win_fraction']:.2f}",
            f"{rep['summary']['fluency_cost_at_1']:.1%}",
        )
    console.print(etable)
    console.print(f"report {res.json}, plot {res.png}")
    questions = [p.question for p in load_pairs(pairs_dir / "test.jsonl")[:2]]
    mults = [-2.0, 0.0, 2.0]
    gens = steered_generations(lm.model, lm.tokenizer, [vec], mults, questions, max_new_tokens=40)
    gtable = Table("question", *[f"m = {m:+g}" for m in mults], show_lines=True, title="steered answers")
    for q in questions:
        gtable.add_row(q, *[g.text for m in mults for g in gens if g.prompt == q and g.multiplier == m])
    console.print(gtable)
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
