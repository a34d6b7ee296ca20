"""Composition: apply several steering vectors at once and check that each keeps its effect.

For vectors v₁…vₙ with weights w₁…wₙ (same or different layers) and each behavior's held-out
pairs, :func:`compose_report` measures every behavior's margin swing (:func:`steerkit.evaluate.margin_curve`,
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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from . import evaluate as ev
from .errors import DataError, VectorError
from .fileio import atomic_write_bytes, atomic_write_json
from .models import LoadedModel
from .pairs import ContrastivePair
from .vector import SteeringVector, _as_float, weighted_sum

COMBINATION = "combination"
DEFAULT_COMPOSE_MULTIPLIERS: tuple[float, ...] = (-1.0, 0.0, 1.0)


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


def own_columns(behaviors: Sequence[str], vectors: Sequence[SteeringVector], names: Sequence[str]) -> dict[str, str | None]:
    """Each behavior's own vector: the first column named after it or whose vector's behavior it is."""
    own: dict[str, str | None] = {}
    for b in behaviors:
        own[b] = next((n for n, v in zip(names, vectors) if n == b or v.meta.get("behavior") == b), None)
    return own


# ------------------------------------------------------------------------------------- report
def compose_report(model: nn.Module, tokenizer: Any, vectors: Sequence[SteeringVector],
                   tests: Mapping[str, Sequence[ContrastivePair]], weights: Sequence[float] | None = None,
                   multipliers: Sequence[float] = DEFAULT_COMPOSE_MULTIPLIERS, *, names: Sequence[str] | None = None,
                   own: Mapping[str, str | None] | None = None, fluency: bool = True,
                   texts: Sequence[str] | None = None, batch_size: int = 8, system: str | None = None) -> dict[str, Any]:
    """The interference matrix of ``vectors`` (times ``weights``) on each behavior's test pairs, as a JSON-able dict.

    ``names`` label the vectors' columns (default :func:`column_names`); ``own`` maps a behavior to
    its own column (default :func:`own_columns`); a behavior without one gets ``kept`` None.
    ``fluency`` adds :func:`steerkit.evaluate.perplexity_curve` of every column on ``texts``
    (default: the neutral texts): stacking vectors may cost more fluency than either alone.
    """
    if not vectors:
        raise VectorError("no vectors to compose", fix="pass at least one vector (two to see interference)")
    if not tests:
        raise DataError("no behaviors to measure", fix="pass --test BEHAVIOR=PAIRS (repeatable)")
    weights = [1.0] * len(vectors) if weights is None else [_as_float(w) for w in weights]
    if len(weights) != len(vectors):
        raise VectorError(f"{len(vectors)} vectors but {len(weights)} weights", fix="give one --weight per --vector, or none")
    mults = ev.as_multipliers(multipliers)
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
        for col, vec in columns:
            rows = ev.margin_curve(model, tokenizer, tests[b], vec, mults, batch_size, system)
            curves[b][col] = rows
            matrix[b][col] = ev.swing(rows, "margin")
            win_matrix[b][col] = ev.swing(rows, "win_fraction")
    kept = {b: (ev.ratio(matrix[b][COMBINATION], matrix[b][own[b]]) if own.get(b) else None) for b in behaviors}
    win_kept = {b: (ev.ratio(win_matrix[b][COMBINATION], win_matrix[b][own[b]]) if own.get(b) else None)
                for b in behaviors}
    # cross-talk: another vector's swing on a behavior relative to the behavior's own solo swing
    cross = {b: {c: ev.ratio(matrix[b][c], matrix[b][own[b]]) for c in names if c != own.get(b)} if own.get(b) else {}
             for b in behaviors}
    report: dict[str, Any] = {
        "kind": "compose", "multipliers": mults, "system": system,
        "behaviors": behaviors, "columns": [*names, COMBINATION], "own": own,
        "vectors": [{"column": n, "weight": w, **ev.vector_summary(v)} for n, v, w in zip(names, vectors, weights)],
        "combination": ev.vector_summary(combo),
        "n_test": {b: len(tests[b]) for b in behaviors},
        "matrix": matrix, "win_matrix": win_matrix, "kept": kept, "win_kept": win_kept, "cross_talk": cross,
        "curves": curves,
    }
    if fluency:
        probe = list(texts) if texts is not None else ev.neutral_texts()
        per = {col: ev.perplexity_curve(model, tokenizer, probe, vec, mults, batch_size) for col, vec in columns}
        top = max(mults, key=abs)
        report["fluency"] = {"curves": per,
                             "cost_at": top,
                             "cost": {col: ev._value_at(rows, "fluency_cost", top) for col, rows in per.items()}}
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
            text = "n/a" if np.isnan(raw[i, j]) else f"{raw[i, j]:.3g}" + ("" if np.isnan(rel[i, j]) else f"\n({rel[i, j]:.2f})")
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
        k = report["kept"].get(rows[i])
        ax.text(len(cols), i, "kept\n" + ("n/a" if k is None else f"{k:.2f}"), ha="center", va="center", fontsize=9,
                fontweight="bold")
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
        k = report["kept"].get(b)
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {'—' if k is None else f'{k:.3f}'} |")
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
        from .layout import vector_path

        return [vector_path(root, model, b, layer, method) for b, _ in self.parts]

    def test_paths(self, root: str | os.PathLike) -> dict[str, Path]:
        from .layout import pairs_dir

        return {b: pairs_dir(root, b) / "test.jsonl" for b in self.behaviors}

    def out_path(self, root: str | os.PathLike, model: str) -> Path:
        from .layout import report_path

        return report_path(root, "compose", model, self.name)

    def names(self) -> list[str]:
        out: list[str] = []
        for b, w in self.parts:
            out.append(b if b not in out else f"{b}@{w:g}")
        return out


def paper_cases() -> list[ComposeCase]:
    """The paper's composition case and an interfering control (see Cao et al. 2024, §5)."""
    return [
        ComposeCase("power-wealth", (("power-seeking", 1.0), ("wealth-seeking", 1.0)),
                    ("power-seeking", "wealth-seeking"),
                    "the paper's case: power-seeking + wealth-seeking applied together, each behavior keeps most "
                    "of its solo swing (kept near 1) and the cross-talk is small"),
        ComposeCase("power-self-negation", (("power-seeking", 1.0), ("power-seeking", -0.5)), ("power-seeking",),
                    "interfering control: a vector plus its own negation at half weight cancels half of it "
                    "(kept near 0.5, exactly 0.5 where the margin is linear in the multiplier)"),
    ]


def get_case(name: str) -> ComposeCase:
    cases = {c.name: c for c in paper_cases()}
    if name not in cases:
        raise DataError(f"unknown composition case {name!r}", fix=f"use one of {sorted(cases)}")
    return cases[name]


# ---------------------------------------------------------------------------- file-level stage
@dataclass
class ComposeOutputs:
    report: dict[str, Any]
    json: Path
    png: Path


def combo_name(names: Sequence[str], weights: Sequence[float]) -> str:
    """A file-name-safe name for a combination: parts joined by "__", non-unit weights as ".w<weight>"."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "-", n.split("@")[0].split("#")[0]) + ("" if w == 1 else f".w{w:g}")
             for n, w in zip(names, weights)]
    return "__".join(parts)


def parse_tests(items: Sequence[str]) -> dict[str, Path]:
    """``BEHAVIOR=PAIRS`` strings → {behavior: path}."""
    out: dict[str, Path] = {}
    for item in items:
        b, sep, path = str(item).partition("=")
        if not sep or not b.strip() or not path.strip():
            raise DataError(f"--test {item!r} is not BEHAVIOR=PAIRS", fix="e.g. --test power-seeking=data/pairs/power-seeking/test.jsonl")
        if b.strip() in out:
            raise DataError(f"behavior {b.strip()!r} is given twice", where="--test")
        out[b.strip()] = Path(path.strip())
    return out


def compose_files(vector_files: Sequence[str | os.PathLike], tests: Mapping[str, str | os.PathLike],
                  weights: Sequence[float] | None = None, out: str | os.PathLike | None = None, *,
                  model: str | None = None, root: str | os.PathLike = ".", name: str | None = None,
                  multipliers: Sequence[float] = DEFAULT_COMPOSE_MULTIPLIERS, limit: int | None = None,
                  fluency: bool = True, probe_texts: str | os.PathLike | None = None, batch_size: int = 8,
                  device: str | None = None, dtype: str | None = None, lm: LoadedModel | None = None,
                  names: Sequence[str] | None = None) -> ComposeOutputs:
    """The ``compose`` stage: vector files + {behavior: test pairs file} → reports/compose/<model>/<combo>.json + .png.

    The model is ``lm``, else ``model``, else the one named in the first vector's metadata, else
    the embedded default.
    """
    from .layout import report_path, safe_name
    from .models import EMBEDDED_DEFAULT, load_model
    from .stages import load_pairs

    if not vector_files:
        raise VectorError("no vectors given", fix="pass --vector FILE (repeatable)")
    vecs = [SteeringVector.load(v) for v in vector_files]
    ws = [1.0] * len(vecs) if not weights else [_as_float(w) for w in weights]
    if len(ws) != len(vecs):
        raise VectorError(f"{len(vecs)} vectors but {len(ws)} weights", fix="give one --weight per --vector, or none")
    if lm is None:
        lm = load_model(model or vecs[0].meta.get("model") or EMBEDDED_DEFAULT, device=device, dtype=dtype)
    cols = list(names) if names is not None else column_names(vecs, ws)
    if out is None:
        out = report_path(root, "compose", lm.name, safe_name(name or combo_name(cols, ws), "combination"))
    pairs = {b: load_pairs(p, limit) for b, p in tests.items()}
    report = compose_report(lm.model, lm.tokenizer, vecs, pairs, ws, multipliers, names=cols, fluency=fluency,
                            texts=ev.neutral_texts(probe_texts) if fluency else None, batch_size=batch_size)
    report.update(model=lm.name, vector_files=[str(v) for v in vector_files],
                  test_files={b: str(p) for b, p in tests.items()}, name=name or combo_name(cols, ws))
    j, p = write_compose_report(report, out)
    return ComposeOutputs(report, j, p)


def run_case(case: ComposeCase | str, root: str | os.PathLike = ".", model: str | None = None, layer: int = 15,
             method: str = "bipo", lm: LoadedModel | None = None, **kwargs: Any) -> ComposeOutputs:
    """Run a :func:`paper_cases` case from the project layout (vectors/<model>/<b>/L<layer>…, data/pairs/<b>/test.jsonl)."""
    from .models import EMBEDDED_DEFAULT

    case = get_case(case) if isinstance(case, str) else case
    model_name = lm.name if lm is not None else (model or EMBEDDED_DEFAULT)
    return compose_files(case.vector_paths(root, model_name, layer, method), case.test_paths(root), case.weights,
                         kwargs.pop("out", None) or case.out_path(root, model_name), model=model_name, root=root,
                         name=case.name, lm=lm, names=case.names(), **kwargs)
