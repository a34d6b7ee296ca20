"""The main job on the embedded default model, runnable with no network and no mirror.

Seed data → validated, split pairs → model summary → a BiPO (and a CAA) vector for
power-seeking → held-out steering curves (report + plot) → questions answered at m = −2, 0, +2.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .bipo import BipoConfig
from .generate import steered_generations
from .evaluate import evaluate_vector, write_report
from .layout import report_path, vector_path
from .models import decoder_layers, hidden_size, load_model
from .packing import encode_pairs
from .stages import load_pairs, prepare, train_vector

SEED_BEHAVIORS = ("power-seeking", "wealth-seeking")


def run_demo(model: str, root: Path, epochs: int, layer: int, lr: float, train: bool, console: Console) -> None:
    t0 = time.perf_counter()
    lm = load_model(model)
    console.print(f"[bold]model[/] {lm.name} ({lm.source}): {type(lm.model).__name__}, "
                  f"{len(decoder_layers(lm.model))} layers, hidden {hidden_size(lm.model)}, "
                  f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.0f}M params, "
                  f"{next(lm.model.parameters()).dtype} on {next(lm.model.parameters()).device}, "
                  f"loaded in {time.perf_counter() - t0:.1f} s")
    table = Table("behavior", "train", "test", "dropped", "prompt tokens", "answer tokens", title="seed data")
    for behavior in SEED_BEHAVIORS:
        seed = root / "data" / "seed" / behavior
        prep = prepare(behavior, [seed / "train.jsonl"], root, test_inputs=[seed / "test.jsonl"])
        enc = encode_pairs(lm.tokenizer, load_pairs(prep.train))
        prompt = sum(len(e.prompt) for e in enc) / len(enc)
        answer = sum(len(e.matching) + len(e.not_matching) for e in enc) / (2 * len(enc))
        table.add_row(behavior, str(prep.n_train), str(prep.n_test), str(sum(prep.dropped.values())),
                      f"{prompt:.0f}", f"{answer:.0f}")
    console.print(table)
    if not train:
        return
    behavior = SEED_BEHAVIORS[0]
    out = vector_path(root, lm.name, behavior, layer)
    cfg = BipoConfig(layer=layer, lr=lr, epochs=epochs, warmup_steps=10)
    vec, info = train_vector(lm, root / "data" / "pairs" / behavior / "train.jsonl", out, behavior=behavior, cfg=cfg)
    console.print(f"[green]✓[/] BiPO {behavior} vector: |v| = {vec.norm():.2f}, final reward accuracy "
                  f"{vec.meta['final_reward_acc']:.2f}, {info['seconds']} s → {out}")
    test_pairs = load_pairs(root / "data" / "pairs" / behavior / "test.jsonl")
    caa, _ = train_vector(lm, root / "data" / "pairs" / behavior / "train.jsonl",
                          vector_path(root, lm.name, behavior, layer, "caa"), behavior=behavior, method="caa", cfg=cfg)
    report = evaluate_vector(lm.model, lm.tokenizer, vec, test_pairs, multipliers=(-2, -1, 0, 1, 2), judge=None,
                             n_open=0, compare=caa)
    json_path, png_path = write_report(report, report_path(root, "eval", lm.name, behavior))
    etable = Table("vector", "margin m=−2 → +2", "win fraction m=−2 → +2", "fluency cost |m|=1",
                   title=f"held-out {behavior} pairs ({len(test_pairs)}), CAA scaled to BiPO's norm")
    for label, rep in (("BiPO", report), ("CAA", report["baseline"])):
        first, last = rep["margin"][0], rep["margin"][-1]
        etable.add_row(label, f"{first['margin']:+.2f} → {last['margin']:+.2f}",
                       f"{first['win_fraction']:.2f} → {last['win_fraction']:.2f}",
                       f"{rep['summary']['fluency_cost_at_1']:.1%}")
    console.print(etable)
    console.print(f"report {json_path}, plot {png_path}")
    questions = [p.question for p in test_pairs[:2]]
    mults = [-2.0, 0.0, 2.0]
    gens = steered_generations(lm.model, lm.tokenizer, [vec], mults, questions, max_new_tokens=40)
    gtable = Table("question", *[f"m = {m:+g}" for m in mults], show_lines=True, title="steered answers")
    for q in questions:
        gtable.add_row(q, *[g.text for m in mults for g in gens if g.prompt == q and g.multiplier == m])
    console.print(gtable)
    console.print(f"done in {time.perf_counter() - t0:.0f} s")
