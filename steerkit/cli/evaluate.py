"""``steerkit evaluate`` and ``steerkit generate``: does a vector steer, and what does it say (thin over the stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..eval.config import EvalConfig, GateConfig
from ..eval.metrics import CI, metric
from ..stages.options import EvaluateOptions
from .options import (
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    RootOpt,
    behavior_files,
    command,
    config_from,
    console,
    floats,
    knob_option,
    not_a_pipeline_output,
)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
    app.command()(gate)
    app.command()(generate)


@command()
def evaluate(
    ctx: typer.Context,
    vector: Path = typer.Option(..., "--vector", "-v", help="The steering vector to evaluate."),
    test: Path = typer.Option(
        ..., "--test", "-t", help="Held-out pairs (JSONL from `data prepare`, or any reader format)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Report JSON (default reports/eval/<model>/<behavior>.json); the PNG goes beside it."
    ),
    model: str = ModelOpt,
    multipliers: Optional[list[str]] = knob_option(EvalConfig, "multipliers", "-x"),
    judge: Optional[str] = knob_option(EvalConfig, "judge"),
    n_open: Optional[int] = knob_option(EvalConfig, "n_open"),
    batch_size: Optional[int] = knob_option(EvalConfig, "batch_size"),
    max_new_tokens: Optional[int] = knob_option(EvalConfig, "max_new_tokens"),
    positions: Optional[list[str]] = knob_option(EvalConfig, "positions"),
    limit: Optional[int] = knob_option(EvaluateOptions, "limit"),
    texts: Optional[Path] = knob_option(EvaluateOptions, "texts"),
    prompt_toward: Optional[str] = knob_option(EvaluateOptions, "prompt_toward"),
    prompt_away: Optional[str] = knob_option(EvaluateOptions, "prompt_away"),
    baseline: Optional[Path] = typer.Option(None, help="A second vector (e.g. CAA), compared at this vector's norm."),
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Show that a vector steers on held-out pairs: margins, A/B probability, fluency cost, judged answers."""
    from ..stages import evaluate as evaluate_stage

    cfg = config_from(EvalConfig(), ctx.params)
    if out is None:  # the default path: refused if the project's pipeline owns it
        from ..vector import SteeringVector

        out = not_a_pipeline_output(
            evaluate_stage.default_out(SteeringVector.load(vector), str(vector), model), Path("."), "--out"
        )
    res = evaluate_stage.evaluate(
        vector,
        test,
        out,
        model=model,
        cfg=cfg,
        limit=limit,
        texts=texts,
        baseline=baseline,
        prompt_toward=prompt_toward,
        prompt_away=prompt_away,
        device=device,
        dtype=dtype,
    )
    report = res.report
    for part, title in ((report, "vector"), (report.get("baseline"), "baseline")):
        if part:
            console.print(
                _table(part, f"{title}: {part['vector'].get('method') or '?'} (|v| = {part['vector']['norm']:.3f})")
            )
    for where, part in report.get("by_positions", {}).items():
        console.print(
            f"vector added at {where} positions: "
            + ", ".join(
                f"{metric(k).label} {metric(k).show(part[k], part[k + CI])}" for k in ("margin_swing", "win_swing")
            )
        )
    console.print(_comparison(report["comparison"], report.get("paired")))
    s = report["summary"]
    console.print(
        "summary: "
        + ", ".join(f"{metric(k).label} {metric(k).show(s[k], s[k + CI])}" for k, _ in _COLUMNS if s.get(k) is not None)
        + f", monotonic margin: {'yes' if s.get('monotonic_margin') else 'no'}",
        highlight=False,
    )
    console.print(f"[green]✓[/] {res.json}\n[green]✓[/] {res.png}")


@command()
def gate(
    ctx: typer.Context,
    vector: Path = typer.Option(..., "--vector", "-v", help="The candidate vector."),
    test: Path = typer.Option(..., "--test", "-t", help="The frozen held-out pairs it was evaluated on."),
    evaluation: Path = typer.Option(
        ..., "--evaluation", "-e", help="Its evaluation report (`steerkit evaluate` with --baseline for CAA)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Gate report (default reports/gate/<model>/<behavior>.json)."
    ),
    model: str = ModelOpt,
    multipliers: Optional[list[str]] = knob_option(EvalConfig, "multipliers", "-x"),
    judge: Optional[str] = knob_option(EvalConfig, "judge"),
    n_open: Optional[int] = knob_option(EvalConfig, "n_open"),
    batch_size: Optional[int] = knob_option(EvalConfig, "batch_size"),
    max_new_tokens: Optional[int] = knob_option(EvalConfig, "max_new_tokens"),
    positions: Optional[list[str]] = knob_option(EvalConfig, "positions"),
    limit: Optional[int] = knob_option(EvaluateOptions, "limit"),
    texts: Optional[Path] = knob_option(EvaluateOptions, "texts"),
    caa: Optional[Path] = typer.Option(None, help="The CAA vector, for its off-target effects at the same norm."),
    off_target: Optional[list[str]] = typer.Option(
        None, "--off-target", help="BEHAVIOR=TEST_FILE of another behavior (repeat): how much the vector moves it."
    ),
    metric: Optional[str] = knob_option(GateConfig, "metric"),
    min_effect: Optional[float] = knob_option(GateConfig, "min_effect"),
    tolerance: Optional[float] = knob_option(GateConfig, "tolerance"),
    tolerance_unit: Optional[str] = knob_option(GateConfig, "tolerance_unit"),
    beat_caa: Optional[bool] = knob_option(GateConfig, "beat_caa"),
    beat_prompt: Optional[str] = knob_option(GateConfig, "beat_prompt"),
    max_fluency_cost: Optional[float] = knob_option(GateConfig, "max_fluency_cost"),
    off_target_rule: Optional[str] = knob_option(GateConfig, "off_target_rule"),
    max_off_target_share: Optional[float] = knob_option(GateConfig, "max_off_target_share"),
    seed_rule: Optional[str] = knob_option(GateConfig, "seed_rule"),
    min_seed_cosine: Optional[float] = knob_option(GateConfig, "min_seed_cosine"),
    root: Path = RootOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Decide whether a candidate is released: against the stable version, CAA and the prompt, same pairs.

    Prints the decision and every check; `steerkit catalog build --release reports/gate/<model>`
    then makes a promoted candidate the next stable version.
    """
    from ..layout import report_path
    from ..stages import gate as gate_stage

    others = behavior_files(off_target, "--off-target")
    if out is None:  # the default path: refused if the project's pipeline owns it
        from ..vector import SteeringVector

        meta = SteeringVector.load(vector).meta
        behavior = meta.get("behavior") or vector.parent.name
        out = not_a_pipeline_output(report_path(root, "gate", model, behavior), root, "--out")
    res = gate_stage.gate(
        vector,
        test,
        evaluation,
        out,
        model=model,
        cfg=config_from(EvalConfig(), ctx.params),
        rules=config_from(GateConfig(), ctx.params),
        caa=caa,
        off_target=others,
        limit=limit,
        texts=texts,
        root=root,
        device=device,
        dtype=dtype,
    )
    console.print(decision_table(res.report))
    console.print(f"[green]✓[/] {res.json}")


_MARK = {"pass": "✓", "fail": "✗", "unclear": "?"}


def decision_table(report: dict) -> Table:
    """One gate decision: each check, its outcome (✓ pass, ✗ fail, ? unclear) and whether it was required."""
    title = f"{report['behavior']}: {report['decision']}"
    if report.get("pairs_needed"):
        title += f" (about {report['pairs_needed']} held-out pairs would tell)"
    table = Table("check", "", "required", "detail", title=title)
    for c in report["checks"]:
        mark = _MARK.get(c.get("outcome"), "✓" if c["passed"] else "✗")
        table.add_row(c["name"], mark, "yes" if c["required"] else "no", c["detail"])
    return table


#: the comparison table's columns: a metric and its heading
_COLUMNS = (
    ("margin_swing", "margin"),
    ("margin_per_token_swing", "/token"),
    ("win_swing", "win"),
    ("ab_swing", "A/B"),
    ("judge_swing", "judge"),
    ("fluency_cost_at_1", "fluency cost"),
)


def _comparison(rows: list[dict], paired: list[dict] | None = None) -> Table:
    """BiPO, CAA at its norm, the prompt and BiPO + prompt side by side, each with its 95 % interval; then the
    paired differences on the same pairs."""
    table = Table(
        "method",
        *(h for _, h in _COLUMNS),
        title="side by side, 95 % intervals (swing: largest − smallest multiplier; prompt: toward − away)",
    )
    for r in rows:
        table.add_row(r["method"], *(metric(k).show(r.get(k), r.get(k + CI)) for k, _ in _COLUMNS))
    for r in paired or []:
        table.add_row(
            f"[italic]{r['comparison']}[/]",
            *(metric(k).show(r.get(k), r.get(k + CI)) if k in r else "" for k, _ in _COLUMNS),
        )
    return table


def _table(part: dict, title: str) -> Table:
    def at(rows: list, m: float, key: str) -> str:
        v = next((r.get(key) for r in rows or [] if r["multiplier"] == m), None)
        return "—" if v is None else f"{v:.3f}"

    judged = (part.get("open_ended") or {}).get("curve")
    table = Table(
        "m",
        "margin",
        "/token",
        "win",
        "p(A/B)",
        "ppl",
        "fluency",
        f"judge: {part['open_ended']['judge']}" if judged else "judge",
        title=title,
    )
    for m in sorted({r["multiplier"] for r in part["margin"]}):
        table.add_row(
            f"{m:g}",
            at(part["margin"], m, "margin"),
            at(part["margin"], m, "margin_per_token"),
            at(part["margin"], m, "win_fraction"),
            at(part["ab"], m, "p_matching"),
            at(part["perplexity"], m, "perplexity"),
            at(part["perplexity"], m, "fluency_cost"),
            at(judged, m, "judge_score"),
        )
    return table


@command()
def generate(
    vector: list[Path] = typer.Option(..., "--vector", "-v", help="Vector file(s); several are summed."),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="A prompt (repeatable)."),
    prompts_file: Optional[Path] = typer.Option(None, help="A text file with one prompt per line."),
    multiplier: list[str] = typer.Option(["-2", "0", "2"], "--multiplier", "-x", help="Multipliers (repeatable)."),
    model: str = ModelOpt,
    max_new_tokens: int = typer.Option(48, help="Tokens to generate per answer."),
    positions: str = typer.Option(
        "all",
        help="Where the vector is added: all (every token, as in training and in "
        "llama.cpp), prompt (the prompt's tokens) or generated (the tokens after it).",
    ),
    device: Optional[str] = DeviceOpt,
) -> None:
    """Generate greedy answers side by side for each multiplier."""
    from ..data.texts import read_lines
    from ..errors import SteerkitError
    from ..generate import steered_generations
    from ..models import load_model
    from ..vector import SteeringVector

    mults = floats(multiplier, "--multiplier")
    prompts = list(prompt) + (read_lines(prompts_file, "prompts") if prompts_file else [])
    if not prompts:
        raise SteerkitError("no prompts given", fix="pass --prompt TEXT or --prompts-file FILE")
    vecs = [SteeringVector.load(v) for v in vector]
    lm = load_model(model, device=device)
    gens = steered_generations(lm.model, lm.tokenizer, vecs, mults, prompts, max_new_tokens, positions=positions)
    table = Table("prompt", *[f"m = {m:g}" for m in mults], show_lines=True)
    for p in prompts:
        table.add_row(p, *[g.text for m in mults for g in gens if g.prompt == p and g.multiplier == m])
    console.print(table)
