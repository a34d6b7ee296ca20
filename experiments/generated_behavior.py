"""A behavior from a description beside one from a curated dataset, on the embedded model, and write RESULTS.md.

    python experiments/generated_behavior.py --root PROJECT [--behavior doctor] [--curated power-seeking]

Reads what a pipeline run made in PROJECT (after `steerkit pipeline add doctor --describe ... --run`): the
generation's provenance (the teacher, its prompts, what it kept and dropped), both behaviors' evaluation
reports (every swing with its 95 % interval, the paired comparisons) and their gate decisions, and rebuilds
the "generated" section of RESULTS.md. Nothing is computed here that the reports do not hold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steerkit.eval.metrics import CI, metric  # noqa: E402

sys.path.insert(0, str(REPO / "experiments"))
from results_md import write_section  # noqa: E402

MODEL = "smollm2-135m-instruct"


def shown(values: dict, key: str, name: str | None = None) -> str:
    return metric(name or key).show(values.get(key), values.get(key + CI))


def rows(root: Path, behavior: str) -> tuple[list[str], list[str], dict]:
    ev = json.loads((root / f"reports/eval/{MODEL}/{behavior}.json").read_text())
    gate = json.loads((root / f"reports/gate/{MODEL}/{behavior}.json").read_text())
    names = {
        "vector": "BiPO",
        "caa": "CAA (same norm)",
        "prompt": "prompt (toward − away)",
        "vector+prompt": "BiPO + prompt",
    }
    side = [
        f"| {behavior} | {names[c['method']]} | {shown(c, 'margin_swing')} | {shown(c, 'margin_per_token_swing')} | "
        f"{shown(c, 'win_swing')} | {shown(c, 'fluency_cost_at_1')} |"
        for c in ev["comparison"]
    ]
    paired = [
        f"| {behavior} | {names[c['a']]} − {names[c['b']]} | {shown(c, 'margin_swing')} | {shown(c, 'win_swing')} | {c['n']} |"
        for c in ev.get("paired") or []
    ]
    return side, paired, {"n_test": ev["n_test"], "norm": ev["vector"]["norm"], "gate": gate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="the project the pipeline ran in")
    ap.add_argument("--behavior", default="doctor")
    ap.add_argument("--curated", default="power-seeking")
    ap.add_argument("--date", default=None, help="when the run was made (YYYY-MM-DD)")
    args = ap.parse_args()
    prov = json.loads((args.root / f"data/generated/{args.behavior}/generation.json").read_text())
    gen_side, gen_paired, gen = rows(args.root, args.behavior)
    cur_side, cur_paired, cur = rows(args.root, args.curated)
    dropped = ", ".join(f"{k} {v}" for k, v in prov["dropped"].items()) or "none"
    lines = [
        f"## A behavior from a description ({args.behavior}) beside a curated one ({args.curated})",
        "",
        f"Measured {args.date or 'on the date of the run'} on the team's 2-core CPU (fp32): `steerkit pipeline add "
        f'{args.behavior} --describe "{prov["description"]}" --run` from a fresh clone, then '
        "`python experiments/generated_behavior.py`. Every number with its 95 % interval over the held-out pairs.",
        "",
        f"**The data.** Teacher: {prov['teacher']['kind']} ({prov['teacher']['model']}), temperature "
        f"{prov['sampling']['temperature']}, seed {prov['sampling']['seed']}. Its system prompts "
        f"({prov['prompts']['written_by']}): toward “{prov['prompts']['toward']}”, away “{prov['prompts']['away']}”. "
        f"{prov['questions']['kept']} distinct questions of {prov['questions']['asked']} asked; "
        f"{prov['pairs']['kept']} pairs kept ({prov['pairs'].get('train', '?')} train, {prov['pairs'].get('test', '?')} "
        f"held out); dropped: {dropped}; pairs the judge could not score: {prov['unscored_by_the_judge']}.",
        "",
        "| behavior | method | margin swing | per-token swing | win swing | fluency cost |m|=1 |",
        "|---|---|---:|---:|---:|---:|",
        *gen_side,
        *cur_side,
        "",
        "| behavior | comparison (paired) | margin swing | win swing | pairs |",
        "|---|---|---:|---:|---:|",
        *gen_paired,
        *cur_paired,
        "",
        f"**The gate.** {args.behavior} ({gen['n_test']} held-out pairs, |v| = {gen['norm']:.2f}): "
        f"**{gen['gate']['decision']}** — " + "; ".join(gen["gate"]["reasons"]) + ".",
        f"{args.curated} ({cur['n_test']} held-out pairs, |v| = {cur['norm']:.2f}): **{cur['gate']['decision']}** — "
        + "; ".join(cur["gate"]["reasons"])
        + ".",
    ]
    write_section(REPO / "RESULTS.md", "generated", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
