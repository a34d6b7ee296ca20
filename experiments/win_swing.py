"""Why the win-fraction swing stays small on the embedded model: training budget and multiplier range.

    python experiments/win_swing.py [--quick]     # needs STEERKIT_DATA_MIRROR (the shared datasets)

On power-seeking (BiPO data, calibrated layer, the 30 held-out pairs of paper_behaviors.py) it
trains BiPO with a larger learning rate and more epochs than the default, then measures every
vector (and CAA scaled to each BiPO vector's norm) over a wide multiplier range: held-out margin and
win fraction, the fluency cost on neutral texts, and how far each held-out pair's margin is from
zero at m = 0 — a pair only "wins" when steering moves its margin across zero. Writes
reports/results/win_swing.json and the "win-swing" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from paper_behaviors import OUT, calibrated, load_behavior, log, mirror_dir  # noqa: E402
from results_md import write_section  # noqa: E402

from steerkit.data.texts import neutral_texts  # noqa: E402
from steerkit.eval.curves import margin_curve, perplexity_curve, swing  # noqa: E402
from steerkit.fileio import atomic_write_json  # noqa: E402
from steerkit.models import load_model  # noqa: E402
from steerkit.packing import encode_pairs  # noqa: E402
from steerkit.train import bipo  # noqa: E402
from steerkit.train.caa import train_caa  # noqa: E402
from steerkit.vector import SteeringVector  # noqa: E402

MULTS = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)


def _at(rows: list[dict], key: str, m: float) -> float:
    return next(r[key] for r in rows if r["multiplier"] == m)


def measure(lm, vec: SteeringVector, test, texts) -> dict:
    rows = margin_curve(lm.model, lm.tokenizer, test, vec, MULTS)
    flu = perplexity_curve(lm.model, lm.tokenizer, texts, vec, MULTS)
    zero = _at(rows, "margins", 0.0)
    out = {
        "norm": vec.norm(),
        "curve": [{k: v for k, v in r.items() if k != "margins"} for r in rows],
        "fluency": flu,
        "median_abs_margin_at_0": statistics.median(abs(x) for x in zero),
        "win_at_0": _at(rows, "win_fraction", 0.0),
    }
    for m in (1.0, 2.0, 4.0, 8.0):
        sub = [r for r in rows if abs(r["multiplier"]) == m]
        out[f"margin_swing_{m:g}"] = swing(sub, "margin")
        out[f"win_swing_{m:g}"] = swing(sub, "win_fraction")
        out[f"fluency_cost_{m:g}"] = max(_at(flu, "fluency_cost", m), _at(flu, "fluency_cost", -m))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--markdown-only", action="store_true")
    ap.add_argument("--add-caa", action="store_true", help="only measure CAA at the norms of the BiPO runs in the JSON")
    args = ap.parse_args()
    q = args.quick
    out_json = OUT / "win_swing.json"
    if args.markdown_only:
        write_markdown(json.loads(out_json.read_text()))
        return
    if args.add_caa:  # only (re)measure CAA against the BiPO runs already in the JSON
        result = json.loads(out_json.read_text())
        lm = load_model("smollm2-135m-instruct")
        train, test = load_behavior(mirror_dir(), "power-seeking")
        add_caa(
            lm,
            encode_pairs(lm.tokenizer, train[: result["n_train"]]),
            test[: result["n_test"]],
            neutral_texts(),
            result,
            result["layer"],
        )
        atomic_write_json(out_json, result)
        write_markdown(result)
        return
    torch.set_num_threads(os.cpu_count() or 1)
    mirror = mirror_dir()
    layer, lr0 = calibrated()
    n_train, n_test = (16, 6) if q else (120, 30)
    train, test = load_behavior(mirror, "power-seeking")
    train, test = train[:n_train], test[:n_test]
    lm = load_model("smollm2-135m-instruct")
    texts = neutral_texts()
    enc = encode_pairs(lm.tokenizer, train)
    budgets = [(lr0, 1)] if q else [(lr0, 3), (lr0, 10), (4 * lr0, 3), (4 * lr0, 10)]
    result: dict = {"layer": layer, "n_train": len(enc), "n_test": len(test), "multipliers": list(MULTS), "runs": []}
    for lr, epochs in budgets:
        t = time.perf_counter()
        vec = bipo.train(
            lm.model,
            enc,
            bipo.BipoConfig(layer=layer, lr=lr, epochs=epochs, warmup_steps=10),
            lm.tokenizer.pad_token_id,
            model_name=lm.name,
            progress=False,
            extra_meta={"behavior": "power-seeking"},
        ).vector
        acc = vec.meta.get("final_reward_acc")
        run = {
            "method": "bipo",
            "lr": lr,
            "epochs": epochs,
            "train_seconds": round(time.perf_counter() - t, 1),
            "final_reward_acc": acc,
            **measure(lm, vec, test, texts),
        }
        result["runs"].append(run)
        log(
            f"lr {lr:g} × {epochs} epochs: |v|={run['norm']:.2f}, margin swing ±2 {run['margin_swing_2']:+.2f}, "
            f"win swing ±2/±4/±8 {run['win_swing_2']:+.2f}/{run['win_swing_4']:+.2f}/{run['win_swing_8']:+.2f}"
        )
    atomic_write_json(out_json, result)
    add_caa(lm, enc, test, texts, result, layer)
    atomic_write_json(out_json, result)
    write_markdown(result)
    log("done")


def add_caa(lm, enc, test, texts, result: dict, layer: int) -> None:
    """CAA on the same pairs, scaled to each BiPO run's norm: the same-norm comparison for every budget."""
    caa = train_caa(lm.model, enc, layer, lm.tokenizer.pad_token_id, model_name=lm.name)
    result["runs"] = [r for r in result["runs"] if r["method"] == "bipo"]
    for run in list(result["runs"]):
        row = {
            "method": "caa",
            "lr": None,
            "epochs": None,
            "train_seconds": None,
            "final_reward_acc": None,
            "same_norm_as": f"lr {run['lr']:g} x {run['epochs']}",
            **measure(lm, caa * (run["norm"] / caa.norm()), test, texts),
        }
        result["runs"].append(row)
        log(
            f"CAA at |v|={row['norm']:.2f}: margin swing ±2 {row['margin_swing_2']:+.2f}, "
            f"win swing ±2 {row['win_swing_2']:+.2f}"
        )


def _f(x, spec="+.2f"):
    return "—" if x is None else format(x, spec)


def write_markdown(r: dict) -> None:
    lines = [
        "## Why the win-fraction swing stays small (power-seeking)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python experiments/win_swing.py` (JSON in "
        f"`reports/results/win_swing.json`): BiPO on {r['n_train']} training pairs at layer {r['layer']} with "
        f"more learning rate and epochs than the default, each vector measured on {r['n_test']} held-out pairs "
        "over m = ±1 … ±8. Win swing ±k = win fraction at m = +k minus at m = −k; fluency cost ±k = perplexity "
        "increase on the neutral texts at the worse of ±k; |margin| at m = 0 = median over held-out pairs of "
        "how far each pair's margin is from flipping.",
        "",
        "| vector | lr | epochs | norm | final train reward acc | margin swing ±2 | win swing ±1 | ±2 | ±4 | ±8 | "
        "fluency cost ±2 | ±4 | ±8 | win at m=0 | median abs margin at m=0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in r["runs"]:
        method = run["method"] + (f" (norm of {run['same_norm_as']})" if run.get("same_norm_as") else "")
        lines.append(
            f"| {method} | {_f(run['lr'], 'g')} | {_f(run['epochs'], 'd')} | {run['norm']:.2f} | "
            f"{_f(run['final_reward_acc'], '.2f')} | {_f(run['margin_swing_2'])} | "
            f"{_f(run['win_swing_1'])} | {_f(run['win_swing_2'])} | {_f(run['win_swing_4'])} | "
            f"{_f(run['win_swing_8'])} | {_f(run['fluency_cost_2'], '.1%')} | {_f(run['fluency_cost_4'], '.1%')} | "
            f"{_f(run['fluency_cost_8'], '.1%')} | {run['win_at_0']:.2f} | {run['median_abs_margin_at_0']:.2f} |"
        )
    write_section(REPO / "RESULTS.md", "win-swing", "\n".join(lines))


if __name__ == "__main__":
    main()
