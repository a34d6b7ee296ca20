"""Transfer: does a vector trained on one model steer its LoRA-tuned or sibling models?

:func:`transfer_report` applies the base model's vector to every target (a LoRA target unmerged
and, if asked, merged) and measures it with :func:`steerkit.eval.curves.margin_curve`;
*retention* = swing on the target / swing on the base, per metric. Optionally the cosine between
the base vector and one trained directly on the target, per shared layer. The JSON, a PNG bar
chart of retention and a markdown table are written by :func:`write_transfer_report`.
"""

from __future__ import annotations

import gc
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..data.pairs import ContrastivePair
from ..data.texts import neutral_texts
from ..errors import DataError, ModelError, VectorError
from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..models import hidden_size, model_fingerprint
from ..train.adapter import ensure_same_hidden
from ..train.derive import is_peft, merged_copy
from ..vector import SteeringVector
from . import metrics
from .config import TransferConfig
from .curves import as_multipliers, margin_curve, mean
from .report import vector_summary
from .shift import model_shift

RETENTION_METRICS: tuple[str, ...] = ("margin_swing", "win_swing", "margin_per_token_swing")


def _summary(rows: Sequence[dict]) -> dict[str, Any]:
    """The swings of one margin curve, each with its interval."""
    out: dict[str, Any] = {}
    for k in RETENTION_METRICS:
        metrics.put(out, k, metrics.estimate(k, {"margin": rows}))
    return out


def retention(target_rows: Sequence[dict], base_rows: Sequence[dict]) -> dict[str, Any]:
    """Swing on the target / swing on the base, per metric, on the same pairs (paired interval; None where the
    base shows no effect)."""
    out: dict[str, Any] = {}
    for k in RETENTION_METRICS:
        est = metrics.ratio(
            "retention",
            metrics.swing_values(k, {"margin": target_rows}),
            metrics.swing_values(k, {"margin": base_rows}),
        )
        metrics.put(out, k, est)
    return out


def layer_cosines(a: SteeringVector, b: SteeringVector) -> dict[str, Any]:
    """Cosine between two vectors per shared layer (and their mean)."""
    if a.hidden_size != b.hidden_size:
        raise VectorError(f"cannot compare vectors of hidden size {a.hidden_size} and {b.hidden_size}")
    shared = sorted(set(a.layers) & set(b.layers))
    cos = {}
    for i in shared:
        x, y = a.layers[i].double(), b.layers[i].double()
        den = float(x.norm() * y.norm())
        cos[str(i)] = float(x @ y) / den if den > 0 else None
    vals = [c for c in cos.values() if c is not None]
    return {"shared_layers": shared, "per_layer": cos, "mean": mean(vals) if vals else None}


def _rel_diff(a: Sequence[dict], b: Sequence[dict], key: str = "margin") -> float:
    worst = 0.0
    for x, y in zip(a, b):
        den = max(abs(x[key]), abs(y[key]), 1e-12)
        worst = max(worst, abs(x[key] - y[key]) / den)
    return worst


def transfer_report(
    base_model: nn.Module,
    targets: Mapping[str, nn.Module],
    vector: SteeringVector,
    test_pairs: Sequence[ContrastivePair],
    tokenizer: Any,
    cfg: TransferConfig | None = None,
    *,
    direct_vector: SteeringVector | Mapping[str, SteeringVector] | None = None,
    shift: bool = True,
    probe_texts: Sequence[str] | None = None,
    tokenizers: Mapping[str, Any] | None = None,
    base_name: str = "base",
    system: str | None = None,
) -> dict[str, Any]:
    """The base model's ``vector`` on each target: margin curves, retention, model shift, cosines.

    A peft target is measured unmerged (``<name>:unmerged``) and, with ``cfg.merged``, merged into a
    temporary copy (``<name>:merged``, freed after use); ``consistency[<name>]`` is the largest
    relative difference between their margins. ``shift`` adds :func:`model_shift` of every target
    against the base on ``probe_texts`` (default: neutral texts) and a warning for unmoved ones
    (a merged variant reuses its unmerged twin's shift: ``shift_same_as``).
    ``tokenizers`` gives a target its own tokenizer (a sibling model); KL needs a shared one.
    ``direct_vector``: one vector, or one per target name, trained directly on the target.
    """
    cfg = cfg or TransferConfig()
    mults, batch_size = as_multipliers(cfg.multipliers), cfg.batch_size
    if not targets:
        raise DataError("no targets to transfer to", fix="pass at least one target model or adapter folder")
    vector.check_fits(base_model)
    for name, model in targets.items():
        if model is base_model or (is_peft(model) and model.get_base_model() is base_model):
            raise ModelError(
                f"target {name!r} is the base model itself (a peft wrapper injects its adapter into "
                "the module it wraps, so the base would be changed too)",
                fix="wrap a copy: derive_lora and load_target do that for you",
            )
        ensure_same_hidden(base_model, model, base_name, name)
        vector.check_fits(model)
    tokenizers = dict(tokenizers or {})
    probe = list(probe_texts) if probe_texts is not None else (neutral_texts() if shift else [])
    base_rows = margin_curve(base_model, tokenizer, test_pairs, vector, mults, batch_size, system)
    base_summary = _summary(base_rows)
    report: dict[str, Any] = {
        "kind": "transfer",
        "n_test": len(test_pairs),
        "multipliers": mults,
        "system": system,
        "vector": vector_summary(vector),
        "base": {
            "name": base_name,
            "fingerprint": model_fingerprint(base_model),
            "hidden_size": hidden_size(base_model),
            "margin": base_rows,
            "summary": base_summary,
        },
        "targets": {},
        "retention": {},
        "consistency": {},
        "warnings": [],
    }
    if base_summary["margin_swing"] is not None and base_summary["margin_swing"] <= 0:
        report["warnings"].append(
            f"the vector does not steer the base model (margin swing "
            f"{base_summary['margin_swing']:.4g}); retention is not meaningful"
        )

    def measure(name: str, model: nn.Module, kind: str, of: str, same_as: str | None = None) -> None:
        tok = tokenizers.get(of, tokenizer)
        rows = margin_curve(model, tok, test_pairs, vector, mults, batch_size, system)
        summary = _summary(rows)
        entry: dict[str, Any] = {
            "kind": kind,
            "of": of,
            "fingerprint": model_fingerprint(model),
            "margin": rows,
            "summary": summary,
            "retention": retention(rows, base_rows),
        }
        if shift and probe and same_as is not None:  # the merged copy is the same function: its shift too
            entry["shift"] = report["targets"][same_as].get("shift")
            entry["shift_same_as"] = same_as
        elif shift and probe:
            if tok is tokenizer:
                entry["shift"] = model_shift(base_model, model, tokenizer, probe, batch_size)
            else:  # another tokenizer: perplexities are not comparable token for token, KL undefined
                entry["shift"] = None
            if entry["shift"] is not None and not entry["shift"]["moved"]:
                report["warnings"].append(
                    f"target {name!r} has not moved from the base model "
                    f"(ppl change {entry['shift']['ppl_change']:.2e}, KL {entry['shift']['kl']:.2e}): "
                    "its retention proves nothing"
                )
        report["targets"][name] = entry
        report["retention"][name] = entry["retention"]

    for name, model in targets.items():
        if is_peft(model):
            measure(f"{name}:unmerged", model, "lora-unmerged", name)
            if cfg.merged:
                m = merged_copy(model)
                try:
                    measure(f"{name}:merged", m, "lora-merged", name, same_as=f"{name}:unmerged")
                finally:
                    del m
                    gc.collect()
                a, b = report["targets"][f"{name}:unmerged"]["margin"], report["targets"][f"{name}:merged"]["margin"]
                report["consistency"][name] = {"max_rel_margin_diff": _rel_diff(a, b)}
        else:
            measure(name, model, "model", name)

    if direct_vector is not None:
        if isinstance(direct_vector, SteeringVector):
            report["direct_cosine"] = layer_cosines(vector, direct_vector)
        else:
            report["direct_cosine"] = {n: layer_cosines(vector, v) for n, v in direct_vector.items()}
    for w in report["warnings"]:
        warnings.warn(w, stacklevel=2)
    return report


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "—" if v is None else (f"{v:{spec}}" if isinstance(v, (int, float)) else str(v))


def _cell(name: str, values: Mapping[str, Any], key: str) -> str:
    """``values[key]`` shown as the metric ``name`` shows it, with its interval."""
    return metrics.metric(name).show(values.get(key), values.get(key + metrics.CI))


def markdown_table(report: Mapping[str, Any]) -> str:
    """Retention per target as a markdown table, 95 % intervals in brackets (base first, retention 1)."""
    lines = [
        "| model | margin swing | retention | win swing | retention | ppl change | KL(base‖target) | moved |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    b = report["base"]["summary"]
    lines.append(
        f"| {report['base']['name']} (base) | {_cell('margin_swing', b, 'margin_swing')} | 1.00 "
        f"| {_cell('win_swing', b, 'win_swing')} | 1.00 | — | — | — |"
    )
    for name, t in report["targets"].items():
        s, r, sh = t["summary"], t["retention"], t.get("shift") or {}
        moved = "—" if not sh else ("yes" if sh["moved"] else "**no**")
        lines.append(
            f"| {name} | {_cell('margin_swing', s, 'margin_swing')} | {_cell('retention', r, 'margin_swing')} "
            f"| {_cell('win_swing', s, 'win_swing')} | {_cell('retention', r, 'win_swing')} "
            f"| {_fmt(sh.get('ppl_change'), '+.2%')} | {_fmt(sh.get('kl'), '.2e')} | {moved} |"
        )
    return "\n".join(lines) + "\n"


def render_retention_png(report: Mapping[str, Any]) -> bytes:
    """Bar chart: retention of each metric per target, with the line at 1 (= as strong as on the base)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report["targets"])
    panels = [("margin_swing", "margin swing"), ("win_swing", "win-fraction swing")]
    fig = Figure(figsize=(max(6.0, 1.6 * len(names) + 3), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(panels)
    for k, (key, label) in enumerate(panels):
        xs = [i + (k - (len(panels) - 1) / 2) * width for i in range(len(names))]
        vals = [report["retention"][n].get(key) for n in names]
        cis = [report["retention"][n].get(key + metrics.CI) for n in names]
        errs = [
            [v - c[0] if v is not None and c else 0.0 for v, c in zip(vals, cis)],
            [c[1] - v if v is not None and c else 0.0 for v, c in zip(vals, cis)],
        ]
        bars = ax.bar(xs, [v if v is not None else 0.0 for v in vals], width, label=label, yerr=errs, capsize=3)
        for bar, v in zip(bars, vals):
            ax.annotate(
                "n/a" if v is None else f"{v:.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=15, ha="right", fontsize=9)
    ax.set_ylabel("retention (target swing / base swing), 95 % intervals")
    v = report.get("vector", {})
    ax.set_title(
        f"transfer of {v.get('behavior') or '?'} ({v.get('method') or '?'}, layers {v.get('layers')}) "
        f"from {report['base']['name']}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_transfer_report(report: dict[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """JSON, a PNG bar chart of retention and a markdown table (same stem), all written atomically."""
    json_path = Path(json_path)
    png = atomic_write_bytes(json_path.with_suffix(".png"), render_retention_png(report))
    md = atomic_write_text(json_path.with_suffix(".md"), markdown_table(report))
    return atomic_write_json(json_path, report), png, md
