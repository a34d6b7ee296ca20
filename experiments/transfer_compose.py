"""Transfer and composition on the embedded model, written to RESULTS.md ("transfer-compose" section).

    python experiments/transfer_compose.py [--quick]     # needs STEERKIT_DATA_MIRROR (the shared datasets)

1. Vectors: BiPO power-seeking and wealth-seeking on the BiPO paper's data at the calibrated layer,
   the ones experiments/paper_behaviors.py saved in reports/results/vectors/ (trained here with the
   same settings when they are missing).
2. Transfer: LoRA derivatives of the model fine-tuned on TruthfulQA answers (both answers of each
   pair: a domain shift that teaches neither side of a persona) for a few step counts, so the
   retention of each vector's held-out margin swing is seen against how far the model moved
   (perplexity change and next-token KL on the neutral texts); unmerged and merged; for the
   strongest derivative also the cosine to a power-seeking vector trained directly on it.
3. Composition: the paper's power + wealth case and the interfering control (power-seeking plus
   its own negation at half weight), as interference matrices.
JSON reports go to reports/results/transfer_compose.json.
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
sys.path.insert(0, str(REPO / "experiments"))

from paper_behaviors import OUT, calibrated, load_behavior, log, mirror_dir  # noqa: E402
from results_md import write_section  # noqa: E402

from steerkit.data.benchmarks import read_truthfulqa_csv  # noqa: E402
from steerkit.data.checks import validate  # noqa: E402
from steerkit.data.texts import neutral_texts  # noqa: E402
from steerkit.eval.compose import compose_report, paper_cases  # noqa: E402
from steerkit.eval.config import ComposeConfig, TransferConfig  # noqa: E402
from steerkit.eval.shift import measure_shift  # noqa: E402
from steerkit.eval.transfer import transfer_report  # noqa: E402
from steerkit.fileio import atomic_write_json  # noqa: E402
from steerkit.models import load_model  # noqa: E402
from steerkit.packing import encode_pairs  # noqa: E402
from steerkit.train import bipo  # noqa: E402
from steerkit.train.config import LoraConfig  # noqa: E402
from steerkit.train.derive import derive_lora, training_examples  # noqa: E402
from steerkit.vector import SteeringVector  # noqa: E402

BEHAVIORS = ("power-seeking", "wealth-seeking")
MULTS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def train_vector(lm_model, tokenizer, name, train, layer, lr, epochs, n_train, model_name):
    enc = encode_pairs(tokenizer, train[:n_train])
    cfg = bipo.BipoConfig(layer=layer, lr=lr, epochs=epochs, warmup_steps=10)
    return bipo.train(
        lm_model, enc, cfg, tokenizer.pad_token_id, model_name=model_name, progress=False, extra_meta={"behavior": name}
    ).vector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--steps", type=int, nargs="*", default=None, help="LoRA step counts (default 30 120)")
    ap.add_argument("--lora-lr", type=float, default=2e-3)
    ap.add_argument("--no-direct", action="store_true", help="skip the vector trained directly on a derivative")
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args()
    q = args.quick
    out_json = OUT / "transfer_compose.json"
    if args.markdown_only:
        write_markdown(json.loads(out_json.read_text()))
        return
    torch.set_num_threads(os.cpu_count() or 1)
    mirror = mirror_dir()
    layer, lr = calibrated()
    n_train, n_test, epochs = (16, 6, 1) if q else (120, 30, 3)
    steps_list = args.steps or ([4] if q else [30, 120])
    lm = load_model("smollm2-135m-instruct")
    data = {b: load_behavior(mirror, b) for b in BEHAVIORS}
    tests = {b: data[b][1][:n_test] for b in BEHAVIORS}
    vectors: dict[str, SteeringVector] = {}
    for b in BEHAVIORS:
        path = OUT / "vectors" / f"{b}.bipo.safetensors"
        if path.exists() and not q:
            vectors[b] = SteeringVector.load(path)
            log(f"{b}: vector from {path.relative_to(REPO)} (|v|={vectors[b].norm():.2f})")
        else:
            vectors[b] = train_vector(lm.model, lm.tokenizer, b, data[b][0], layer, lr, epochs, n_train, lm.name)
            if not q:
                vectors[b].save(path)
            log(f"{b}: trained (|v|={vectors[b].norm():.2f})")

    # ---- transfer: LoRA derivatives of increasing strength
    tqa = validate(read_truthfulqa_csv(mirror / "truthfulqa" / "TruthfulQA.csv")).pairs
    examples = training_examples(tqa, lm.tokenizer, "both")
    probe = neutral_texts()
    result: dict = {
        "vector_epochs": sorted({v.meta.get("training", {}).get("epochs") for v in vectors.values()}),
        "layer": layer,
        "n_test": n_test,
        "multipliers": list(MULTS),
        "lora": {},
        "transfer": {},
        "compose": {},
        "lora_lr": args.lora_lr,
        "derive_data": f"TruthfulQA.csv, both answers, {len(examples)} examples",
    }
    derived = {}
    for steps in steps_list:
        t = time.perf_counter()
        d = derive_lora(
            lm.model,
            lm.tokenizer,
            examples,
            LoraConfig(steps=steps, lr=args.lora_lr, r=8, alpha=16, batch_size=4, max_length=128, seed=0),
            base_name=lm.name,
        )
        measure_shift(d, lm.model, probe)
        derived[steps] = d
        result["lora"][str(steps)] = {**d.shift, "seconds": round(time.perf_counter() - t, 1)}
        log(f"LoRA {steps} steps: ppl change {d.shift['ppl_change']:+.1%}, KL {d.shift['kl']:.4f}")
    strongest = max(steps_list)
    direct = None
    if not args.no_direct:
        t = time.perf_counter()
        direct = train_vector(
            derived[strongest].model,
            lm.tokenizer,
            "power-seeking",
            data["power-seeking"][0],
            layer,
            lr,
            epochs,
            n_train,
            f"{lm.name}+lora{strongest}",
        )
        log(f"direct power-seeking vector on LoRA-{strongest} ({time.perf_counter() - t:.0f} s)")
    for b in BEHAVIORS:
        targets = {f"lora{s}": derived[s].model for s in steps_list}
        rep = transfer_report(
            lm.model,
            targets,
            vectors[b],
            tests[b],
            lm.tokenizer,
            TransferConfig(multipliers=tuple(MULTS), merged=True),
            direct_vector={f"lora{strongest}:unmerged": direct} if (direct and b == "power-seeking") else None,
            probe_texts=probe,
            base_name=lm.name,
        )
        result["transfer"][b] = {k: rep[k] for k in ("retention", "consistency", "warnings", "base") if k in rep}
        result["transfer"][b]["direct_cosine"] = rep.get("direct_cosine")
        result["transfer"][b]["targets"] = {
            n: {"summary": r["summary"], "shift": r.get("shift")} for n, r in rep["targets"].items()
        }
        log(
            f"{b}: retention "
            + ", ".join(f"{n} {r.get('margin_swing', float('nan')):.2f}" for n, r in rep["retention"].items())
        )
    del derived

    # ---- composition
    for case in paper_cases():
        vecs = [vectors[b] for b, _ in case.parts]
        names = case.names()
        own = {b: b for b in case.behaviors}
        rep = compose_report(
            lm.model,
            lm.tokenizer,
            vecs,
            {b: tests[b] for b in case.behaviors},
            case.weights,
            ComposeConfig(multipliers=(-1.0, 0.0, 1.0), fluency=True),
            names=names,
            own=own,
            texts=probe,
        )
        rep.pop("curves", None)
        result["compose"][case.name] = rep
        log(f"compose {case.name}: kept " + ", ".join(f"{b} {v:.2f}" for b, v in rep["kept"].items() if v is not None))
    atomic_write_json(out_json, result)
    write_markdown(result)
    log("done")


def _f(x, spec="+.2f"):
    return "—" if x is None else format(x, spec)


def write_markdown(r: dict) -> None:
    lines = [
        "## Transfer and composition",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python experiments/transfer_compose.py` (JSON in "
        "`reports/results/transfer_compose.json`). Vectors: BiPO power- and wealth-seeking trained by "
        f"`paper_behaviors.py` with {'/'.join(map(str, r.get('vector_epochs', [3])))} epochs (|v| = "
        + ", ".join(f"{v['norm']:.2f}" for v in r["compose"]["power-wealth"]["vectors"])
        + f", layer {r['layer']}); {r['n_test']} held-out pairs per behavior; swings over m = −2 … +2.",
        "",
        f"**Transfer.** LoRA derivatives (r 8, lr {r['lora_lr']:g}, batch 4) fine-tuned on {r['derive_data']}. "
        "Retention = held-out margin swing on the derivative / on the base model.",
        "",
        "| derivative | ppl change (neutral texts) | next-token KL | behavior | retention unmerged | retention merged |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for steps, shift in sorted(r["lora"].items(), key=lambda kv: int(kv[0])):
        for b, t in r["transfer"].items():
            ret = t["retention"]
            lines.append(
                f"| LoRA {steps} steps | {shift['ppl_change']:+.1%} | {shift['kl']:.4f} | {b} | "
                f"{_f((ret.get(f'lora{steps}:unmerged') or {}).get('margin_swing'), '.2f')} | "
                f"{_f((ret.get(f'lora{steps}:merged') or {}).get('margin_swing'), '.2f')} |"
            )
    cos = (r["transfer"].get("power-seeking") or {}).get("direct_cosine")
    if cos:
        c = next(iter(cos.values())) if "mean" not in cos else cos
        lines += [
            "",
            f"Cosine between the base model's power-seeking vector and one trained the same way directly on "
            f"the strongest derivative: {c['mean']:.3f}.",
        ]
    lines += [
        "",
        "**Composition** (m = −1 … +1; kept = a behavior's swing under the combination / its solo swing):",
        "",
        "| case | behavior measured | solo swing | combination swing | kept | fluency cost of the combination at m=1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, c in sorted(r["compose"].items(), key=lambda kv: kv[0] != "power-wealth"):  # the paper's case first
        for b in c["behaviors"]:
            own = c["own"][b]
            fl = (c.get("fluency") or {}).get("cost", {}).get("combination")
            lines.append(
                f"| {name} | {b} | {_f(c['matrix'][b][own])} | {_f(c['matrix'][b]['combination'])} | "
                f"{_f(c['kept'][b], '.2f')} | {_f(fl, '.1%')} |"
            )
    write_section(REPO / "RESULTS.md", "transfer-compose", "\n".join(lines))


if __name__ == "__main__":
    main()
