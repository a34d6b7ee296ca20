"""One vector's evaluation report: every curve, its headline numbers, a baseline at the same norm, a plot.

``evaluate_vector`` runs the margin, A/B, perplexity and (with a judge) open-ended curves for a
vector and for a comparison vector (e.g. CAA) scaled to its norm into one JSON-able report;
``write_report`` saves it with a PNG of the curves beside it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import as_float
from ..data.pairs import ContrastivePair
from ..data.texts import neutral_texts
from ..errors import VectorError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..models import pad_token_id
from ..vector import SteeringVector
from .ab import ab_curve, ab_item, ab_runner, encode_ab
from .config import EvalConfig
from .curves import (
    as_multipliers,
    margin_curve,
    open_ended_curve,
    pair_runner,
    perplexity_curve,
    swing,
    text_runner,
    value_at,
)
from .judges import Judge
from .scoring import Runner


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
    """The headline numbers of one vector's curves (pure)."""
    margin = curves["margin"]
    ordered = [r["margin"] for r in sorted(margin, key=lambda r: r["multiplier"])]
    fluency = [c for m in (-1.0, 1.0) if (c := value_at(curves["perplexity"], "fluency_cost", m)) is not None]
    judged = curves.get("open_ended")
    return {
        "margin_swing": swing(margin, "margin"),
        "win_swing": swing(margin, "win_fraction"),
        "ab_swing": swing(curves["ab"], "p_matching") if curves.get("ab") else None,
        "judge_swing": swing(judged["curve"], "judge_score") if judged else None,
        "fluency_cost_at_1": max(fluency) if fluency else None,
        "monotonic_margin": all(b >= a - 1e-9 for a, b in zip(ordered, ordered[1:])),
    }


@dataclass
class Inputs:
    """A test set's inputs encoded once, with their cached streams, shared by every vector evaluated on them."""

    pairs: Sequence[ContrastivePair]
    margin: tuple
    ab: tuple
    texts: Runner
    system: str | None = None

    @classmethod
    def build(
        cls,
        model: nn.Module,
        tokenizer: Any,
        pairs: Sequence[ContrastivePair],
        texts: Sequence[str],
        batch_size: int = 8,
        system: str | None = None,
        cached: bool = True,
    ) -> Inputs:
        encoded = encode_ab(tokenizer, [ab_item(p) for p in pairs], system)
        return cls(
            pairs,
            pair_runner(model, tokenizer, pairs, batch_size, system, cached),
            (ab_runner(model, encoded, pad_token_id(tokenizer), batch_size, cached), encoded),
            text_runner(model, tokenizer, texts, batch_size, cached),
            system,
        )


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
            out["by_positions"][p] = {
                "margin": rows,
                "margin_swing": swing(rows, "margin"),
                "win_swing": swing(rows, "win_fraction"),
            }
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
    cached: bool = True,
) -> dict[str, Any]:
    """Every curve and the summary for ``vector`` (and ``compare``, scaled to its norm) as one JSON-able dict.

    Open-ended answers are generated and judged only with a ``judge`` and ``cfg.n_open`` > 0.
    ``cached`` runs each curve through the stream cache (equal to the full model; ``False`` runs the full
    model at every multiplier).
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
    return report


_PANELS = (
    ("margin", "margin", "log-prob margin (nats)"),
    ("margin", "win_fraction", "win fraction"),
    ("ab", "p_matching", "A/B p(matching letter)"),
    ("perplexity", "fluency_cost", "fluency cost (ppl/ppl₀ − 1)"),
    ("open_ended", "judge_score", "judge score"),
    ("margin", "margin_per_token", "margin per token"),
)


def _series(part: dict[str, Any], curve: str, key: str) -> tuple[list[float], list[float]]:
    rows = part.get(curve)
    if isinstance(rows, dict):
        rows = rows.get("curve")
    rows = [r for r in rows or [] if r.get(key) is not None]
    return [r["multiplier"] for r in rows], [r[key] for r in rows]


def render_png(report: dict[str, Any]) -> bytes:
    """The steering curves of a report (and its baseline) as PNG bytes."""
    from matplotlib.backends.backend_agg import (
        FigureCanvasAgg,  # Agg on this figure only, no global pyplot state
    )
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    parts = [(report, "-o", "")] + ([(report["baseline"], "--s", "baseline ")] if report.get("baseline") else [])
    for ax, (curve, key, title) in zip(axes, _PANELS):
        plotted = 0
        for part, style, prefix in parts:
            xs, ys = _series(part, curve, key)
            v = part.get("vector", {})
            label = f"{prefix}{v.get('method') or 'vector'} |v|={v.get('norm', float('nan')):.2f}"
            if xs:
                ax.plot(xs, ys, style, label=label)
                plotted += 1
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
            ax.legend(fontsize=8)
    v = report.get("vector", {})
    fig.suptitle(
        f"{v.get('behavior') or '?'} · {v.get('model') or '?'} · layer {v.get('layer')} · "
        f"{report.get('n_test', '?')} held-out pairs"
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
