"""Composition: apply several steering vectors at once and check that each keeps its effect.

For vectors v₁…vₙ with weights w₁…wₙ (same or different layers) and each behavior's held-out
pairs, :func:`compose_report` measures every behavior's margin swing (:func:`steerkit.eval.curves.margin_curve`,
swing = margin at the largest multiplier − margin at the smallest) under

* each weighted vector ``wᵢ·vᵢ`` alone (one column per vector: the diagonal is a behavior's own
  effect, the rest is cross-talk), and
* the combination ``Σ wᵢ·vᵢ`` applied at once (the ``combination`` column),

giving an *interference matrix* (rows = behaviors measured, columns = vectors applied) and
``kept[b]`` = combined swing / solo swing for each behavior b. ``kept`` ≈ 1: the behavior keeps
its effect in the mix (the paper's power-seeking + wealth-seeking case); a behavior combined with
its own negation at half weight keeps ≈ 0.5 (the interfering case). See :func:`paper_cases`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import as_float
from ..data.pairs import ContrastivePair
from ..data.texts import neutral_texts
from ..errors import DataError, VectorError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..layout import pairs_file, report_path, vector_path
from ..vector import SteeringVector, weighted_sum
from . import metrics
from .config import ComposeConfig
from .curves import (
    as_multipliers,
    margin_curve,
    pair_runner,
    perplexity_curve,
    ratio,
    swing,
    text_runner,
    value_at,
)
from .report import vector_summary

COMBINATION = "combination"


# ------------------------------------------------------------------------------------ columns
def column_names(vectors: Sequence[SteeringVector], weights: Sequence[float]) -> list[str]:
    """A label per vector: its behavior (or v<i>), with "@<weight>" where a label would repeat."""
    base = [str(v.meta.get("behavior") or f"v{i}") for i, v in enumerate(vectors)]
    out: list[str] = []
    for b, w in zip(base, weights):
        name = b if base.count(b) == 1 or b not in out else f"{b}@{w:g}"
        k = 2
        while name in out or name == COMBINATION:
            name, k = f"{b}#{k}", k + 1
        out.append(name)
    return out


def own_columns(
    behaviors: Sequence[str], vectors: Sequence[SteeringVector], names: Sequence[str]
) -> dict[str, str | None]:
    """Each behavior's own vector: the first column named after it or whose vector's behavior it is."""
    own: dict[str, str | None] = {}
    for b in behaviors:
        own[b] = next((n for n, v in zip(names, vectors) if n == b or v.meta.get("behavior") == b), None)
    return own


# ------------------------------------------------------------------------------------- report
def compose_report(
    model: nn.Module,
    tokenizer: Any,
    vectors: Sequence[SteeringVector],
    tests: Mapping[str, Sequence[ContrastivePair]],
    weights: Sequence[float] | None = None,
    cfg: ComposeConfig | None = None,
    *,
    names: Sequence[str] | None = None,
    own: Mapping[str, str | None] | None = None,
    texts: Sequence[str] | None = None,
    system: str | None = None,
) -> dict[str, Any]:
    """The interference matrix of ``vectors`` (times ``weights``) on each behavior's test pairs, as a JSON-able dict.

    ``names`` label the vectors' columns (default :func:`column_names`); ``own`` maps a behavior to
    its own column (default :func:`own_columns`); a behavior without one gets ``kept`` None.
    ``cfg.fluency`` adds :func:`steerkit.eval.curves.perplexity_curve` of every column on ``texts``
    (default: the neutral texts): stacking vectors may cost more fluency than either alone.
    """
    if not vectors:
        raise VectorError("no vectors to compose", fix="pass at least one vector (two to see interference)")
    if not tests:
        raise DataError("no behaviors to measure", fix="pass --test BEHAVIOR=PAIRS (repeatable)")
    weights = [1.0] * len(vectors) if weights is None else [as_float(w, "weight") for w in weights]
    if len(weights) != len(vectors):
        raise VectorError(
            f"{len(vectors)} vectors but {len(weights)} weights", fix="give one --weight per --vector, or none"
        )
    cfg = cfg or ComposeConfig()
    mults, batch_size = as_multipliers(cfg.multipliers), cfg.batch_size
    names = list(names) if names is not None else column_names(vectors, weights)
    if len(names) != len(vectors) or len(set(names)) != len(names) or COMBINATION in names:
        raise DataError(f"column names {names} must be unique, one per vector, and not {COMBINATION!r}")
    behaviors = list(tests)
    own = dict(own) if own is not None else own_columns(behaviors, vectors, names)
    bad = {b: c for b, c in own.items() if c is not None and c not in names}
    if bad:
        raise DataError(f"own columns {bad} are not among the vectors' columns {names}")
    combo = weighted_sum(vectors, weights)
    columns: list[tuple[str, SteeringVector]] = [(n, v * w) for n, v, w in zip(names, vectors, weights)]
    columns.append((COMBINATION, combo))
    for _, vec in columns:
        vec.check_fits(model)

    curves: dict[str, dict[str, list[dict]]] = {b: {} for b in behaviors}
    matrix: dict[str, dict[str, float | None]] = {b: {} for b in behaviors}
    win_matrix: dict[str, dict[str, float | None]] = {b: {} for b in behaviors}
    for b in behaviors:
        run = pair_runner(model, tokenizer, tests[b], batch_size, system)  # the stream below L once, every column
        for col, vec in columns:
            rows = margin_curve(model, tokenizer, tests[b], vec, mults, batch_size, system, runner=run)
            curves[b][col] = rows
            matrix[b][col] = swing(rows, "margin")
            win_matrix[b][col] = swing(rows, "win_fraction")
    kept: dict[str, float | None] = {}
    kept_ci: dict[str, list[float] | None] = {}
    win_kept: dict[str, float | None] = {}
    for b in behaviors:
        for metric_name, out, ci in (("margin_swing", kept, kept_ci), ("win_swing", win_kept, None)):
            est = None
            if own.get(b):
                both, alone = ({"margin": curves[b][c]} for c in (COMBINATION, own[b]))
                est = metrics.ratio(
                    "kept", metrics.swing_values(metric_name, both), metrics.swing_values(metric_name, alone)
                )
            out[b] = None if est is None else est.value
            if ci is not None:
                ci[b] = None if est is None else est.interval()
    # cross-talk: another vector's swing on a behavior relative to the behavior's own solo swing
    cross = {
        b: {c: ratio(matrix[b][c], matrix[b][own[b]]) for c in names if c != own.get(b)} if own.get(b) else {}
        for b in behaviors
    }
    report: dict[str, Any] = {
        "kind": "compose",
        "multipliers": mults,
        "system": system,
        "behaviors": behaviors,
        "columns": [*names, COMBINATION],
        "own": own,
        "vectors": [{"column": n, "weight": w, **vector_summary(v)} for n, v, w in zip(names, vectors, weights)],
        "combination": vector_summary(combo),
        "n_test": {b: len(tests[b]) for b in behaviors},
        "matrix": matrix,
        "win_matrix": win_matrix,
        "kept": kept,
        "kept_ci95": kept_ci,  # paired over the behavior's pairs: the combination vs its own vector alone
        "win_kept": win_kept,
        "cross_talk": cross,
        "curves": curves,
    }
    if cfg.fluency:
        probe = list(texts) if texts is not None else neutral_texts()
        run_texts = text_runner(model, tokenizer, probe, batch_size)
        per = {
            col: perplexity_curve(model, tokenizer, probe, vec, mults, batch_size, runner=run_texts)
            for col, vec in columns
        }
        top = max(mults, key=abs)
        report["fluency"] = {
            "curves": per,
            "cost_at": top,
            "cost": {col: value_at(rows, "fluency_cost", top) for col, rows in per.items()},
        }
    return report


# ------------------------------------------------------------------------------------ output
def render_heatmap_png(report: Mapping[str, Any]) -> bytes:
    """Heat map of the interference matrix; colour = swing / the behavior's own solo swing, text = raw swing."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = report["behaviors"], report["columns"]
    raw = np.full((len(rows), len(cols)), np.nan)
    rel = np.full_like(raw, np.nan)
    for i, b in enumerate(rows):
        own = report["own"].get(b)
        ref = report["matrix"][b].get(own) if own else None
        if not ref:
            vals = [abs(v) for v in report["matrix"][b].values() if v is not None]
            ref = max(vals) if vals and max(vals) > 0 else None
        for j, c in enumerate(cols):
            v = report["matrix"][b].get(c)
            if v is not None:
                raw[i, j] = v
                rel[i, j] = v / ref if ref else np.nan
    fig = Figure(figsize=(2.0 + 1.6 * (len(cols) + 1), 1.6 + 0.9 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(rel), cmap="RdBu_r", vmin=-1.5, vmax=1.5, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            text = (
                "n/a"
                if np.isnan(raw[i, j])
                else f"{raw[i, j]:.3g}" + ("" if np.isnan(rel[i, j]) else f"\n({rel[i, j]:.2f})")
            )
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
        k = report["kept"].get(rows[i])
        ax.text(
            len(cols),
            i,
            "kept\n" + ("n/a" if k is None else f"{k:.2f}"),
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
        )
    ax.set_xlim(-0.5, len(cols) + 0.5)
    weights = {v["column"]: v["weight"] for v in report["vectors"]}
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([f"{c}\n×{weights[c]:g}" if c in weights else c for c in cols], fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=9)
    ax.set_xlabel("vector(s) applied")
    ax.set_ylabel("behavior measured")
    m = report["multipliers"]
    ax.set_title(f"margin swing over m ∈ [{min(m):g}, {max(m):g}] (colour: / own solo swing)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_compose_report(report: dict[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path]:
    """The report as JSON and its heat map as a PNG beside it (same stem), both written atomically."""
    json_path = Path(json_path)
    png = atomic_write_bytes(json_path.with_suffix(".png"), render_heatmap_png(report))
    return atomic_write_json(json_path, report), png


def markdown_table(report: Mapping[str, Any]) -> str:
    """The interference matrix (margin swings) and kept as a markdown table."""
    cols = report["columns"]
    lines = ["| behavior | " + " | ".join(cols) + " | kept |", "|---|" + "---:|" * (len(cols) + 1)]
    for b in report["behaviors"]:
        cells = [("—" if report["matrix"][b][c] is None else f"{report['matrix'][b][c]:.3f}") for c in cols]
        kept = metrics.metric("kept").show(report["kept"].get(b), (report.get("kept_ci95") or {}).get(b))
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {kept} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- paper cases
@dataclass(frozen=True)
class ComposeCase:
    """A named combination: (behavior whose vector is applied, weight) parts and the behaviors measured."""

    name: str
    parts: tuple[tuple[str, float], ...]
    behaviors: tuple[str, ...]
    expect: str

    @property
    def weights(self) -> list[float]:
        return [w for _, w in self.parts]

    def vector_paths(self, root: str | os.PathLike, model: str, layer: int, method: str = "bipo") -> list[Path]:
        return [vector_path(root, model, b, layer, method) for b, _ in self.parts]

    def test_paths(self, root: str | os.PathLike) -> dict[str, Path]:
        return {b: pairs_file(root, b, "test") for b in self.behaviors}

    def out_path(self, root: str | os.PathLike, model: str) -> Path:
        return report_path(root, "compose", model, self.name)

    def names(self) -> list[str]:
        out: list[str] = []
        for b, w in self.parts:
            out.append(b if b not in out else f"{b}@{w:g}")
        return out


def paper_cases() -> list[ComposeCase]:
    """The paper's composition case and an interfering control (see Cao et al. 2024, §5)."""
    return [
        ComposeCase(
            "power-wealth",
            (("power-seeking", 1.0), ("wealth-seeking", 1.0)),
            ("power-seeking", "wealth-seeking"),
            "the paper's case: power-seeking + wealth-seeking applied together, each behavior keeps most "
            "of its solo swing (kept near 1) and the cross-talk is small",
        ),
        ComposeCase(
            "power-self-negation",
            (("power-seeking", 1.0), ("power-seeking", -0.5)),
            ("power-seeking",),
            "interfering control: a vector plus its own negation at half weight cancels half of it "
            "(kept near 0.5, exactly 0.5 where the margin is linear in the multiplier)",
        ),
    ]


def get_case(name: str) -> ComposeCase:
    cases = {c.name: c for c in paper_cases()}
    if name not in cases:
        raise DataError(f"unknown composition case {name!r}", fix=f"use one of {sorted(cases)}")
    return cases[name]
