"""One vector's evaluation report: every curve, its headline numbers, a baseline at the same norm, a plot.

``evaluate_vector`` runs the margin, A/B, perplexity and (with a judge) open-ended curves for a
vector and for a comparison vector (e.g. CAA) scaled to its norm into one JSON-able report;
``write_report`` saves it with a PNG of the curves beside it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..config import as_float
from ..data.pairs import ContrastivePair
from ..data.prompts import Prompts
from ..data.texts import neutral_texts
from ..errors import VectorError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..vector import SteeringVector
from . import metrics, stats
from .ab import ab_curve
from .config import EvalConfig
from .curves import as_multipliers, margin_curve, open_ended_curve, perplexity_curve
from .inputs import Inputs
from .judges import Judge
from .prompt import comparison, paired_comparisons, prompt_baseline, prompted_inputs, with_prompt


def scale_to_norm(vector: SteeringVector, norm: float) -> SteeringVector:
    """A copy of ``vector`` with total norm ``norm`` (to compare methods at equal strength)."""
    norm = as_float(norm)
    current = vector.norm()
    if current == 0:
        raise VectorError("cannot scale a zero vector to a norm", fix="use a trained, non-zero vector")
    k = norm / current
    return SteeringVector(
        {i: v * k for i, v in vector.layers.items()}, {**vector.meta, "original_norm": current, "scaled_to_norm": norm}
    )


def vector_summary(vector: SteeringVector) -> dict[str, Any]:
    meta = vector.meta
    return {
        "behavior": meta.get("behavior"),
        "method": meta.get("method"),
        "model": meta.get("model"),
        "layer": meta.get("layer", vector.layer_ids[0] if len(vector.layer_ids) == 1 else None),
        "layers": vector.layer_ids,
        "norm": vector.norm(),
        **({"original_norm": meta["original_norm"]} if "original_norm" in meta else {}),
    }


def summarize(curves: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one vector's curves, each with its 95 % interval (pure; ``steerkit.eval.metrics``)."""
    ordered = [r["margin"] for r in sorted(curves["margin"], key=lambda r: r["multiplier"])]
    return {**metrics.summarize(curves), "monotonic_margin": all(b >= a - 1e-9 for a, b in zip(ordered, ordered[1:]))}


def evaluate_one(
    model: nn.Module, tokenizer: Any, vector: SteeringVector, inputs: Inputs, cfg: EvalConfig, judge: Judge | None
) -> dict[str, Any]:
    """Every curve of one vector and its summary (and its margins at the other ``cfg.positions``)."""
    mults = as_multipliers(cfg.multipliers)
    where, *others = cfg.positions
    pairs, system = inputs.pairs, inputs.system
    curves: dict[str, Any] = {
        "margin": margin_curve(model, tokenizer, pairs, vector, mults, positions=where, runner=inputs.margin),
        "ab": ab_curve(model, tokenizer, pairs, vector, mults, positions=where, runner=inputs.ab),
        "perplexity": perplexity_curve(
            model, tokenizer, [], vector, sorted({*mults, -1.0, 1.0}), positions=where, runner=inputs.texts
        ),
        "open_ended": (
            open_ended_curve(model, tokenizer, pairs, vector, mults, judge, cfg.n_open, cfg.max_new_tokens, system)
            if judge is not None and cfg.n_open > 0
            else None
        ),
    }
    out = {"vector": vector_summary(vector), "positions": where, **curves, "summary": summarize(curves)}
    if others:
        out["by_positions"] = {}
        for p in others:
            rows = margin_curve(model, tokenizer, pairs, vector, mults, positions=p, runner=inputs.margin)
            out["by_positions"][p] = {"margin": rows}
            for name in ("margin_swing", "win_swing"):
                metrics.put(out["by_positions"][p], name, metrics.estimate(name, {"margin": rows}))
    return out


def evaluate_vector(
    model: nn.Module,
    tokenizer: Any,
    vector: SteeringVector,
    test_pairs: Sequence[ContrastivePair],
    cfg: EvalConfig | None = None,
    *,
    judge: Judge | None = None,
    texts: Sequence[str] | None = None,
    compare: SteeringVector | None = None,
    match_norm: bool = True,
    system: str | None = None,
    prompts: Prompts | None = None,
    others: Mapping[str, SteeringVector] | None = None,
    seeds: Mapping[int, SteeringVector] | None = None,
    cached: bool = True,
) -> dict[str, Any]:
    """Every curve and the summary for ``vector`` as one JSON-able dict, beside the alternatives a user has.

    ``compare`` (e.g. CAA) is evaluated at the vector's norm; ``prompts`` adds the prompt baseline
    (toward − away, no vector) and the vector together with the prompt; ``comparison`` lists the
    four side by side; ``others`` (e.g. the stable release) are evaluated as they are, on the same
    inputs; ``seeds`` (the same recipe's other seeds) get their margin curves only, and ``seeds`` in the
    report says how much their swings spread. Open-ended answers are generated and judged only with a ``judge`` and
    ``cfg.n_open`` > 0. ``cached`` runs each curve through the stream cache (equal to the full model;
    ``False`` runs the full model at every multiplier).
    """
    cfg = cfg or EvalConfig()
    texts = list(texts) if texts is not None else neutral_texts()
    inputs = Inputs.build(model, tokenizer, test_pairs, texts, cfg.batch_size, system, cached)
    report = {
        "n_test": len(test_pairs),
        "multipliers": as_multipliers(cfg.multipliers),
        "system": system,
        **evaluate_one(model, tokenizer, vector, inputs, cfg, judge),
    }
    if compare is not None:
        base = scale_to_norm(compare, vector.norm()) if match_norm else compare
        report["baseline"] = evaluate_one(model, tokenizer, base, inputs, cfg, judge)
    if prompts is not None:
        plain = next(r for r in report["perplexity"] if r["multiplier"] == 0)
        sides = prompted_inputs(model, tokenizer, test_pairs, texts, prompts, cfg, cached)
        report["prompt"] = prompt_baseline(model, tokenizer, vector, sides, plain, cfg, judge)
        report["vector_with_prompt"] = with_prompt(model, tokenizer, vector, sides, plain, cfg, judge)
    if others:
        report["others"] = {name: evaluate_one(model, tokenizer, v, inputs, cfg, judge) for name, v in others.items()}
    if seeds:
        report["seeds"] = seed_spread(model, tokenizer, vector, seeds, inputs, cfg)
    report["comparison"] = comparison(report)
    report["paired"] = paired_comparisons(report)
    return report


def seed_spread(
    model: nn.Module,
    tokenizer: Any,
    vector: SteeringVector,
    seeds: Mapping[int, SteeringVector],
    inputs: Inputs,
    cfg: EvalConfig,
) -> dict[str, Any]:
    """Each seed's margin swing (with its interval) on the held-out pairs, their spread, and their agreement."""
    mults = as_multipliers(cfg.multipliers)
    per_seed: dict[str, Any] = {}
    for s, v in sorted(seeds.items()):
        rows = margin_curve(model, tokenizer, inputs.pairs, v, mults, runner=inputs.margin)
        per_seed[str(s)] = metrics.put({}, "margin_swing", metrics.estimate("margin_swing", {"margin": rows}))
    swings = [e["margin_swing"] for e in per_seed.values() if e["margin_swing"] is not None]
    info = vector.meta.get("seeds") or {}
    return {
        "shipped": info.get("shipped"),
        "why": info.get("why"),
        "min_cosine": info.get("min_cosine"),
        "swings": per_seed,
        "swing_range": [min(swings), max(swings)] if swings else None,
        "swing_sd": float(stats.mean_of(swings).sd) if len(swings) > 1 else None,
    }


_PANELS = (
    ("margin", "margin", "log-prob margin (nats)"),
    ("margin", "win_fraction", "win fraction"),
    ("ab", "p_matching", "A/B p(matching letter)"),
    ("perplexity", "fluency_cost", "fluency cost (ppl/ppl₀ − 1)"),
    ("open_ended", "judge_score", "judge score"),
    ("margin", "margin_per_token", "margin per token"),
)


#: a plotted column and the per-pair values its band is the interval of
_PER_PAIR = {
    "margin": lambda r: r.get("margins"),
    "margin_per_token": lambda r: r.get("margins_per_token"),
    "win_fraction": lambda r: None if r.get("margins") is None else [float(m > 0) for m in r["margins"]],
    "p_matching": lambda r: r.get("p_matchings"),
    "judge_score": lambda r: r.get("scores"),
}


def _series(part: dict[str, Any], curve: str, key: str) -> tuple[list[float], list[float], list | None]:
    """x, y and the 95 % band (low and high per point; None where the rows keep no per-pair values)."""
    rows = part.get(curve)
    if isinstance(rows, dict):
        rows = rows.get("curve")
    rows = [r for r in rows or [] if r.get(key) is not None]
    per_pair = [_PER_PAIR[key](r) if key in _PER_PAIR else None for r in rows]
    band = None
    if rows and all(v is not None and len(v) > 1 for v in per_pair):
        cis = [stats.mean_of(v).ci95 for v in per_pair]
        band = [[c[0] for c in cis], [c[1] for c in cis]]
    return [r["multiplier"] for r in rows], [r[key] for r in rows], band


def _prompt_levels(ax: Any, report: dict[str, Any], curve: str, key: str) -> int:
    """The prompt baseline's two levels (away, toward) as horizontal lines; how many were drawn."""
    rows = [r for r in (report.get("prompt") or {}).get(curve) or [] if r.get(key) is not None]
    for r, color in zip(rows, ("tab:purple", "tab:red")):
        ax.axhline(r[key], color=color, ls=":", lw=1.2, label=f"prompt: {r['prompt']}")
    return len(rows)


def _side_by_side(ax: Any, report: dict[str, Any]) -> None:
    """Bars: the margin and win-fraction swings of BiPO, CAA, the prompt and BiPO + prompt."""
    rows = report.get("comparison") or []
    keys = (("margin_swing", "margin swing"), ("win_swing", "win swing ×10"))
    for k, (key, label) in enumerate(keys):
        scale = 10 if key == "win_swing" else 1
        vals = [(r.get(key) or 0.0) * scale for r in rows]
        cis = [r.get(key + metrics.CI) for r in rows]
        errs = [
            [v - c[0] * scale if c else 0.0 for v, c in zip(vals, cis)],
            [c[1] * scale - v if c else 0.0 for v, c in zip(vals, cis)],
        ]
        ax.bar([i + (k - 0.5) * 0.4 for i in range(len(rows))], vals, 0.4, label=label, yerr=errs, capsize=3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["method"] for r in rows], fontsize=8, rotation=15)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title("side by side: swing over the multipliers, 95 % intervals (prompt: toward − away)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    if rows:
        ax.legend(fontsize=8)


def render_png(report: dict[str, Any]) -> bytes:
    """The steering curves of a report (its baseline, the prompt baseline, vector + prompt) as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg on this figure only, no global pyplot state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4).ravel()
    parts = [(report, "-o", "")] + ([(report["baseline"], "--s", "baseline ")] if report.get("baseline") else [])
    if report.get("vector_with_prompt"):
        parts.append((report["vector_with_prompt"], ":^", "with the prompt: "))
    for ax, (curve, key, title) in zip(axes, _PANELS):
        plotted = 0
        for part, style, prefix in parts:
            xs, ys, band = _series(part, curve, key)
            v = part.get("vector") or report.get("vector", {})
            label = f"{prefix}{v.get('method') or 'vector'} |v|={v.get('norm', float('nan')):.2f}"
            if xs:
                (line,) = ax.plot(xs, ys, style, label=label)
                if band is not None:  # the 95 % interval of the mean over the held-out pairs
                    ax.fill_between(xs, band[0], band[1], color=line.get_color(), alpha=0.15, lw=0)
                plotted += 1
        plotted += _prompt_levels(ax, report, curve, key)
        if key in ("win_fraction", "p_matching"):
            ax.set_ylim(-0.03, 1.03)
        if curve == "open_ended" and isinstance(report.get("open_ended"), dict):
            title = f"judge score ({report['open_ended'].get('judge')})"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("multiplier m")
        ax.axvline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
        if not plotted:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif plotted > 1:
            ax.legend(fontsize=7)
    _side_by_side(axes[len(_PANELS)], report)
    axes[-1].axis("off")
    v = report.get("vector", {})
    fig.suptitle(
        f"{v.get('behavior') or '?'} · {v.get('model') or '?'} · layer {v.get('layer')} · "
        f"{report.get('n_test', '?')} held-out pairs (bands, bars: 95 % intervals over the pairs)"
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report's PNG atomically."""
    return atomic_write_bytes(path, render_png(report))


def write_report(report: dict[str, Any], json_path: str | Path) -> tuple[Path, Path]:
    """The report as JSON and its curves as a PNG beside it (same stem); both written atomically."""
    json_path = Path(json_path)
    png = plot_report(report, json_path.with_suffix(".png"))
    return atomic_write_json(json_path, report), png
