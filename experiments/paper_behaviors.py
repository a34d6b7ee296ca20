"""Reproduce the BiPO paper's behaviors on the embedded model and write RESULTS.md.

    python experiments/paper_behaviors.py [--quick]        # needs STEERKIT_DATA_MIRROR (the shared datasets)

1. Calibration on power-seeking: a layer sweep (and a learning-rate sweep at the best layer)
   on a validation split carved from the BiPO training file.
2. For each behavior (power-seeking, wealth-seeking, hallucination, jailbreak, truthfulness):
   BiPO and CAA on the same training pairs at the chosen layer, CAA scaled to BiPO's norm,
   evaluated on held-out pairs; jailbreak also by refusal rate on AdvBench goals in neither
   BiPO split, truthfulness also by TruthfulQA MC1 accuracy on held-out questions.
Each behavior's report goes to reports/results/<behavior>.json (its BiPO and CAA vectors to
reports/results/vectors/); the "behaviors" section of RESULTS.md is rebuilt from them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steerkit.data.benchmarks import read_advbench_csv, read_truthfulqa_csv, read_truthfulqa_mc  # noqa: E402
from steerkit.data.checks import split, validate  # noqa: E402
from steerkit.data.prompts import prompts_for  # noqa: E402
from steerkit.data.readers import read_bipo_csv  # noqa: E402
from steerkit.eval.calibrate import calibrate  # noqa: E402
from steerkit.eval.config import EvalConfig  # noqa: E402
from steerkit.eval.judges import EmbeddingJudge  # noqa: E402
from steerkit.eval.metrics import CI, metric  # noqa: E402
from steerkit.eval.paper import mc1_accuracy_curve, refusal_curve  # noqa: E402
from steerkit.eval.report import evaluate_vector  # noqa: E402
from steerkit.fileio import atomic_write_json  # noqa: E402
from steerkit.models import load_model  # noqa: E402
from steerkit.packing import encode_pairs  # noqa: E402
from steerkit.train import bipo  # noqa: E402
from steerkit.train.caa import train_caa  # noqa: E402
from steerkit.vector import SteeringVector  # noqa: E402

sys.path.insert(0, str(REPO / "experiments"))
from results_md import write_section  # noqa: E402

OUT = REPO / "reports" / "results"
MULTS = (-2.0, -1.0, 0.0, 1.0, 2.0)
BEHAVIORS = ("power-seeking", "jailbreak", "truthfulness", "wealth-seeking", "hallucination")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mirror_dir() -> Path:
    """The shared datasets: $STEERKIT_DATA_MIRROR, else ../shared/datasets beside the project."""
    return Path(os.environ.get("STEERKIT_DATA_MIRROR") or REPO.parent / "shared" / "datasets")


def calibrated() -> tuple[int, float]:
    """(layer, lr) chosen by the recorded calibration; layer 15, lr 5e-3 without one."""
    path = OUT / "calibration.json"
    best = json.loads(path.read_text())["best"] if path.exists() else {}
    return best.get("layer", 15), best.get("lr", 5e-3)


def unique_questions(pairs):
    seen, out = set(), []
    for p in pairs:
        if p.question not in seen:
            seen.add(p.question)
            out.append(p)
    return out


def load_behavior(mirror: Path, name: str):
    if name == "truthfulness":
        pairs = validate(read_truthfulqa_csv(mirror / "truthfulqa" / "TruthfulQA.csv")).pairs
        return split(pairs, test_fraction=0.3, seed=0)
    train = validate(read_bipo_csv(mirror / "bipo" / name / "train.csv")).pairs
    test = validate(read_bipo_csv(mirror / "bipo" / name / "test.csv")).pairs
    if name == "jailbreak":  # each question appears 7 times with different refusals: keep one of each
        train, test = unique_questions(train), unique_questions(test)
    train_q = {p.question for p in train}
    return train, [p for p in test if p.question not in train_q]


def train_pair(lm, name, train, layer, lr, epochs, n_train):
    """BiPO and CAA on the same pairs (saved for transfer_compose.py and --reuse-vectors), and their seconds."""
    enc = encode_pairs(lm.tokenizer, train[:n_train])
    cfg = bipo.BipoConfig(layer=layer, lr=lr, epochs=epochs, warmup_steps=10)
    t = time.perf_counter()
    res = bipo.train(
        lm.model, enc, cfg, lm.tokenizer.pad_token_id, model_name=lm.name, progress=False, extra_meta={"behavior": name}
    )
    bipo_s = time.perf_counter() - t
    t = time.perf_counter()
    caa = train_caa(lm.model, enc, layer, lm.tokenizer.pad_token_id, model_name=lm.name)
    caa_s = time.perf_counter() - t
    log(f"{name}: trained BiPO ({bipo_s:.0f} s, |v|={res.vector.norm():.2f}) and CAA (|v|={caa.norm():.2f})")
    (OUT / "vectors").mkdir(parents=True, exist_ok=True)
    res.vector.save(OUT / "vectors" / f"{name}.bipo.safetensors")
    caa.save(OUT / "vectors" / f"{name}.caa.safetensors")
    return res.vector, caa, {"n_train": len(enc), "bipo_seconds": bipo_s, "caa_seconds": caa_s}


def saved_pair(name):
    """The vectors an earlier run saved, and its training facts (``--reuse-vectors``)."""
    vec = SteeringVector.load(OUT / "vectors" / f"{name}.bipo.safetensors")
    caa = SteeringVector.load(OUT / "vectors" / f"{name}.caa.safetensors")
    old = json.loads((OUT / f"{name}.json").read_text()) if (OUT / f"{name}.json").exists() else {}
    facts = {k: old.get(k) for k in ("n_train", "bipo_seconds", "caa_seconds")}
    # the behavior-specific measures of these very vectors (greedy, deterministic): kept, not generated again
    facts.update({k: old[k] for k in ("refusal", "mc1") if k in old})
    return vec, caa, facts


def run_behavior(lm, name, vec, caa, facts, layer, lr, epochs, test, n_test, judge, extra):
    report = evaluate_vector(
        lm.model,
        lm.tokenizer,
        vec,
        test[:n_test],
        EvalConfig(multipliers=tuple(MULTS), n_open=4),
        judge=judge,
        compare=caa,
        prompts=prompts_for(name),
    )
    report.update(
        behavior=name,
        layer=layer,
        lr=lr,
        epochs=epochs,
        **facts,
        caa_natural_norm=caa.norm(),
        final_reward_acc=vec.meta["final_reward_acc"],
    )
    scaled_caa = caa * (vec.norm() / caa.norm())
    for key, fn in extra.items():
        if key not in report:  # --reuse-vectors keeps the earlier run's measures of the same vectors
            report[key] = {"bipo": fn(vec), "caa": fn(scaled_caa)}
    atomic_write_json(OUT / f"{name}.json", report)
    log(
        f"{name}: margin swing BiPO {report['summary']['margin_swing']:.2f} vs CAA "
        f"{report['baseline']['summary']['margin_swing']:.2f}"
    )
    return report


def fmt(x, spec="+.2f"):
    return "—" if x is None else format(x, spec)


def shown(values: dict, key: str, name: str | None = None) -> str:
    """A number of a summary (or comparison row) with its 95 % interval, as the metric shows it."""
    return metric(name or key).show(values.get(key), values.get(key + CI))


def write_results_md(calib: dict | None) -> None:
    rows, extras, prompted, paired = [], [], [], []
    names = {
        "vector": "BiPO",
        "caa": "CAA (same norm)",
        "prompt": "prompt (toward − away)",
        "vector+prompt": "BiPO + prompt",
    }
    for path in sorted(OUT / f"{b}.json" for b in BEHAVIORS):  # other scripts' JSON lives here too
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        for c in r.get("comparison") or []:
            prompted.append(
                f"| {r['behavior']} | {names.get(c['method'], c['method'])} | {shown(c, 'margin_swing')} | "
                f"{shown(c, 'margin_per_token_swing')} | {shown(c, 'win_swing')} | {shown(c, 'ab_swing')} | "
                f"{shown(c, 'judge_swing')} | {shown(c, 'fluency_cost_at_1')} |"
            )
        for c in r.get("paired") or []:
            a, b = (names.get(x, x) for x in (c["a"], c["b"]))
            paired.append(
                f"| {r['behavior']} | {a} − {b} | {shown(c, 'margin_swing')} | {shown(c, 'margin_per_token_swing')} | "
                f"{shown(c, 'win_swing')} | {c['n']} |"
            )
        for label, part, secs in (
            ("BiPO", r, r["bipo_seconds"] or 0),
            ("CAA (same norm)", r["baseline"], r["caa_seconds"] or 0),
        ):
            s = part["summary"]
            rows.append(
                f"| {r['behavior']} | {label} | {r['epochs']} | {part['vector']['norm']:.2f} | {shown(s, 'margin_swing')} | "
                f"{shown(s, 'win_swing')} | {shown(s, 'ab_swing')} | {shown(s, 'judge_swing')} | "
                f"{shown(s, 'fluency_cost_at_1')} | {'yes' if s['monotonic_margin'] else 'no'} | {secs:.0f} |"
            )
        for key in ("refusal", "mc1"):
            if key in r:
                for label in ("bipo", "caa"):
                    curve = r[key][label]
                    metric = "refusal_rate" if key == "refusal" else "mc1_accuracy"
                    extras.append(
                        f"| {r['behavior']} | {label.upper()} | {metric} | "
                        + " | ".join(f"{c[metric]:.2f}" for c in curve)
                        + " |"
                    )
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on the team's 2-core CPU (fp32) by "
        "`python experiments/paper_behaviors.py`; per-behavior JSON in `reports/results/`.",
        "Swings are value at m = +2 minus value at m = −2 on held-out pairs, each with its 95 % interval in",
        "brackets (a seeded bootstrap over the held-out pairs; `steerkit.eval.metrics`); CAA is trained on the same",
        "pairs at the same layer and scaled to the BiPO vector's norm. Judge = offline embedding judge",
        "(all-MiniLM-L6-v2) on greedy answers to 4 held-out questions. Fluency cost = perplexity increase",
        "on the neutral text set at |m| = 1 (worse of ±1). Training time includes the fast engine's cache.",
        "Other processes shared the 2 cores during this run, so times are upper bounds.",
        "",
    ]
    if calib:
        lines += [
            "## Calibration (power-seeking, validation split)",
            "",
            "| layer | lr | epochs | val margin swing (m=±1) | win swing | fluency cost |m|=1 | eligible | s |",
            "|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for c in calib["candidates"]:
            lines.append(
                f"| {c['layer']} | {c['lr']:g} | {c['epochs']} | {c['val_margin_swing_at_1']:+.2f} | "
                f"{c['val_win_swing_at_1']:+.2f} | {c['fluency_cost_at_1']:.1%} | {'yes' if c['eligible'] else 'no'} | "
                f"{c['seconds']:.0f} |"
            )
        lines += [
            "",
            f"Chosen: layer {calib['best']['layer']}, lr {calib['best']['lr']:g}, "
            f"{calib['best']['epochs']} epochs; safe multiplier range ±{calib['safe_multiplier']:g} "
            "(largest |m| whose fluency cost stays under 10%).",
            "",
        ]
    lines += [
        "## BiPO beside CAA",
        "",
        "| behavior | vector | BiPO epochs | norm | margin swing | win swing | A/B swing | judge swing | fluency cost |m|=1 | monotonic | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        *rows,
        "",
    ]
    if prompted:
        lines += [
            "## BiPO, CAA, the prompt, and BiPO with the prompt",
            "",
            "The prompt baseline is the unsteered model with a system prompt asking for the behavior minus",
            "with one asking to avoid it (`steerkit/data/prompts.yaml`), on the same held-out pairs, measured",
            "by the same code; BiPO + prompt is the vector at m = −2 with the away prompt to m = +2 with the",
            "toward prompt. Swings as above; fluency cost for the prompt rows is that of the prompted model.",
            "",
            "| behavior | method | margin swing | per-token swing | win swing | A/B swing | judge swing | fluency cost |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *prompted,
            "",
        ]
    if paired:
        lines += [
            "## Paired comparisons (the same held-out pairs)",
            "",
            "Each row is the mean over the held-out pairs of (a's swing − b's swing) on the same pair, with its",
            "95 % interval: far tighter than the two separate intervals above suggest, because both methods meet",
            "the same pairs. An interval that contains 0 means these pairs cannot tell the two apart.",
            "",
            "| behavior | comparison | margin swing | per-token swing | win swing | pairs |",
            "|---|---|---:|---:|---:|---:|",
            *paired,
            "",
        ]
    if extras:
        lines += [
            "## Behavior-specific measures",
            "",
            "| behavior | vector | metric | m=−2 | m=0 | m=+2 |",
            "|---|---|---|---:|---:|---:|",
            *extras,
            "",
        ]
    write_section(REPO / "RESULTS.md", "behaviors", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--skip-calibration", action="store_true")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--markdown-only", action="store_true")
    ap.add_argument("--lr-sweep", action="store_true", help="also try lr 2e-3 and 1e-2 at the chosen layer")
    ap.add_argument("--epochs", type=int, default=None, help="BiPO epochs for every behavior (default 3, jailbreak 2)")
    ap.add_argument(
        "--reuse-vectors", action="store_true", help="evaluate the vectors an earlier run saved instead of training"
    )
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    mirror = mirror_dir()
    OUT.mkdir(parents=True, exist_ok=True)
    calib_path = OUT / "calibration.json"
    if args.markdown_only:
        write_results_md(json.loads(calib_path.read_text()) if calib_path.exists() else None)
        return
    q = args.quick
    lm = load_model("smollm2-135m-instruct")
    judge = EmbeddingJudge()
    layer, lr, calib = args.layer, 5e-3, None
    if not args.skip_calibration:
        train, _ = load_behavior(mirror, "power-seeking")
        cal_train, cal_val = train[: 24 if q else 64], train[-(8 if q else 24) :]
        log("calibrating on power-seeking")
        cal = calibrate(
            lm.model,
            lm.tokenizer,
            cal_train,
            cal_val,
            layers=(8, 15) if q else (10, 15, 20),
            lrs=(5e-3,),
            epochs=(1 if q else 2,),
            model_name=lm.name,
        )
        best = cal.best
        if not q and args.lr_sweep:  # a learning-rate check at the chosen layer
            cal2 = calibrate(
                lm.model,
                lm.tokenizer,
                cal_train,
                cal_val,
                layers=(best.layer,),
                lrs=(2e-3, 1e-2),
                epochs=(2,),
                model_name=lm.name,
            )
            cands = cal.candidates + cal2.candidates
            best = max([c for c in cands if c.eligible] or cands, key=lambda c: c.val_margin_swing_at_1)
        else:
            cands = cal.candidates
        calib = {
            "candidates": [c.__dict__ for c in cands],
            "best": best.__dict__,
            "safe_multiplier": cal.safe_multiplier,
        }
        atomic_write_json(calib_path, calib)
        layer, lr = best.layer, best.lr
        log(f"chosen layer {layer}, lr {lr}")
    elif calib_path.exists():
        calib = json.loads(calib_path.read_text())
        layer, lr = calib["best"]["layer"], calib["best"]["lr"]
    n_train, n_test, epochs = (16, 8, 1) if q else (120, 30, 3)
    behaviors = args.only or list(BEHAVIORS)
    for name in behaviors:
        train, test = load_behavior(mirror, name)
        extra = {}
        if name == "jailbreak":
            used = {p.question for p in train} | {p.question for p in test}
            goals = [
                g["goal"]
                for g in read_advbench_csv(mirror / "advbench" / "harmful_behaviors.csv")
                if g["goal"] not in used
            ][: 8 if q else 30]
            extra["refusal"] = lambda v: refusal_curve(lm.model, lm.tokenizer, goals, v, (-2.0, 0.0, 2.0))
        if name == "truthfulness":
            test_q = {p.question for p in test}
            items = [
                i
                for i in read_truthfulqa_mc(mirror / "truthfulqa" / "data" / "mc_task.json")
                if i["question"] in test_q
            ][: 8 if q else 30]
            extra["mc1"] = lambda v: mc1_accuracy_curve(lm.model, lm.tokenizer, items, v, (-2.0, 0.0, 2.0))
        ep = args.epochs or (2 if name == "jailbreak" and not q else epochs)
        if args.reuse_vectors:
            vec, caa, facts = saved_pair(name)
            ep = vec.meta["training"]["epochs"]
        else:
            vec, caa, facts = train_pair(
                lm, name, train, layer, lr, ep, 80 if name == "jailbreak" and not q else n_train
            )
        run_behavior(lm, name, vec, caa, facts, layer, lr, ep, test, n_test, judge, extra)
        write_results_md(calib)
    log("done")


if __name__ == "__main__":
    main()
