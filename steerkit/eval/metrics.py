"""Every metric steerkit reports, defined once: how it comes from per-pair values, which way is better, its
unit, how it is shown and how its 95 % interval is computed.

An evaluation report is made of *parts* (the vector, CAA at its norm, the prompt baseline, the
vector with the prompt, the stable release): each holds curves whose rows carry the per-pair (or
per-text) values they were averaged from. A **swing** is, per pair, the value at the curve's high
end minus the value at its low end (largest multiplier − smallest; for the prompt baseline the
toward prompt − the away prompt), averaged over the pairs; its interval is a bootstrap over the
pairs, and two parts measured on the same pairs are compared pair by pair (``paired``). The
**fluency cost** comes from per-text log-likelihoods; **ratios** (transfer retention, kept when
composed, off-target share) from two sets of per-pair swings.

Reports, the gate, the run summary, the catalog, the CLI tables and RESULTS.md read names, labels,
directions and formats from ``METRICS``; adding a metric is one entry here and its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import stats
from .stats import Estimate

#: the prompt baseline's sides in the order of a curve: away is its low end, toward its high end
SIDE_RANK = {"away": 0, "toward": 1}
CI = "_ci95"


@dataclass(frozen=True)
class Metric:
    """One reported number: its name (the summary key), how people read it, and where it comes from."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    fmt: str  # format spec of one value: "+.2f", ".1%"
    kind: str  # swing | fluency | ratio
    curve: str | None = None  # swing: the curve of a part whose rows carry the per-pair values
    per_item: Callable[[Mapping[str, Any]], Sequence[float] | None] | None = None  # swing: one row's per-pair values
    of: str | None = None  # ratio: the swing it is a ratio of
    paired: bool = True  # ratio: numerator and denominator on the same pairs
    absolute: bool = False  # ratio: |numerator| (a share of the effect whatever its sign)
    doc: str = ""

    def show(self, value: float | None, ci: Sequence[float] | None = None) -> str:
        """``+11.38 [+8.80, +14.10]`` — the value and, when known, its interval."""
        if not _is_number(value):
            return "—"
        text = format(value, self.fmt)
        if ci is not None and len(ci) == 2 and all(_is_number(x) for x in ci):
            text += f" [{format(ci[0], self.fmt)}, {format(ci[1], self.fmt)}]"
        return text

    def better(self, a: float, b: float) -> bool:
        """``a`` is better than ``b`` in this metric's direction."""
        return a > b if self.higher_is_better else a < b


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _key(name: str) -> Callable[[Mapping[str, Any]], Sequence[float] | None]:
    return lambda row: row.get(name)


def _wins(row: Mapping[str, Any]) -> list[float] | None:
    margins = row.get("margins")
    return None if margins is None else [1.0 if m > 0 else 0.0 for m in margins]


_SWINGS = (
    Metric(
        "margin_swing",
        "margin swing",
        "nats",
        True,
        "+.2f",
        "swing",
        "margin",
        _key("margins"),
        doc="log p(matching) − log p(not matching), per pair, at the high end minus the low end",
    ),
    Metric(
        "margin_per_token_swing",
        "per-token margin swing",
        "nats per token",
        True,
        "+.3f",
        "swing",
        "margin",
        _key("margins_per_token"),
        doc="the margin with each answer's log-probability divided by its length (not skewed by long answers)",
    ),
    Metric(
        "win_swing",
        "win swing",
        "share of pairs",
        True,
        "+.2f",
        "swing",
        "margin",
        _wins,
        doc="whether the model prefers the matching answer (margin > 0), high end minus low end",
    ),
    Metric(
        "ab_swing",
        "A/B swing",
        "probability",
        True,
        "+.3f",
        "swing",
        "ab",
        _key("p_matchings"),
        doc="p(matching option's letter) in the multiple-choice form, high end minus low end",
    ),
    Metric(
        "judge_swing",
        "judge swing",
        "judge score",
        True,
        "+.3f",
        "swing",
        "open_ended",
        _key("scores"),
        doc="the judge's score of greedy free answers to the first n_open questions, high end minus low end",
    ),
)
_OTHERS = (
    Metric(
        "fluency_cost_at_1",
        "fluency cost at m = ±1",
        "perplexity ratio − 1",
        False,
        ".1%",
        "fluency",
        doc="ppl(steered)/ppl(unsteered) − 1 of neutral texts, the larger of m = −1 and m = +1 "
        "(prompt baseline: of its two prompts); resampled over the texts",
    ),
    Metric(
        "retention",
        "transfer retention",
        "target swing / base swing",
        True,
        ".2f",
        "ratio",
        of="margin_swing",
        doc="the vector's swing on a derived model over its swing on the base model, the same pairs",
    ),
    Metric(
        "kept",
        "kept when composed",
        "combined swing / solo swing",
        True,
        ".2f",
        "ratio",
        of="margin_swing",
        doc="a behavior's swing with both vectors applied over its swing with its own alone, the same pairs",
    ),
    Metric(
        "off_target_share",
        "off-target share",
        "|swing on another behavior| / own swing",
        False,
        ".2f",
        "ratio",
        of="margin_swing",
        paired=False,
        absolute=True,
        doc="how much a vector moves another behavior's held-out pairs, as a share of how much it moves its own",
    ),
)
METRICS: dict[str, Metric] = {m.name: m for m in (*_SWINGS, *_OTHERS)}
SWINGS: tuple[str, ...] = tuple(m.name for m in _SWINGS)


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


# ------------------------------------------------------------------------------ per-pair values
def per_pair(values: Any) -> list[float]:
    """Per-pair values as a report keeps them: plain floats at full precision, so every number recomputes exactly
    (rounding would move a difference of two near-equal margins, or a fluency cost, by more than it saves)."""
    return [float(v) for v in values]


def _rows(part: Mapping[str, Any] | None, curve: str) -> list[Mapping[str, Any]]:
    rows = (part or {}).get(curve)
    if isinstance(rows, Mapping):  # the open-ended curve: {"judge", "curve": rows, "generations"}
        rows = rows.get("curve")
    return [r for r in rows or [] if isinstance(r, Mapping)]


def _order(row: Mapping[str, Any]) -> tuple[float, int]:
    return (float(row.get("multiplier", 0.0)), SIDE_RANK.get(row.get("prompt"), 0))


def swing_values(name: str, part: Mapping[str, Any] | None) -> np.ndarray | None:
    """Per pair: the swing metric ``name``'s value at the part's high end minus its low end (None: not measured)."""
    m = metric(name)
    if m.kind != "swing":
        raise ValueError(f"{name} is not a swing")
    rows = [r for r in _rows(part, m.curve) if m.per_item(r) is not None]
    if len(rows) < 2:
        return None
    lo, hi = min(rows, key=_order), max(rows, key=_order)
    a, b = np.asarray(m.per_item(lo), dtype=np.float64), np.asarray(m.per_item(hi), dtype=np.float64)
    if a.shape != b.shape or not len(a) or _order(lo) == _order(hi):
        return None
    return b - a


def estimate(name: str, part: Mapping[str, Any] | None, reference: Mapping[str, Any] | None = None) -> Estimate | None:
    """The metric ``name`` of one part with its interval (None: not measured there).

    ``reference``: the unsteered perplexity row (per-text NLLs) a fluency cost is relative to; by
    default the part's own row at m = 0.
    """
    m = metric(name)
    if m.kind == "swing":
        values = swing_values(name, part)
        return None if values is None else stats.mean_of(values)
    if m.kind == "fluency":
        return _fluency(part, reference)
    raise ValueError(f"{name} is a ratio: use ratio()")


def _fluency(part: Mapping[str, Any] | None, reference: Mapping[str, Any] | None) -> Estimate | None:
    rows = [r for r in _rows(part, "perplexity") if r.get("nlls") is not None]
    if reference is None:
        reference = next((r for r in rows if r.get("multiplier") == 0 and not r.get("prompt")), None)
    steered = [r for r in rows if r is not reference and (r.get("prompt") or abs(r.get("multiplier", 0)) == 1)]
    if reference is None or reference.get("nlls") is None or not steered:
        return None
    return stats.fluency_cost([(r["nlls"], r["tokens"]) for r in steered], (reference["nlls"], reference["tokens"]))


def ratio(name: str, num: Sequence[float] | None, den: Sequence[float] | None) -> Estimate | None:
    """The ratio metric ``name`` from per-pair swings (numerator, denominator) with its interval."""
    m = metric(name)
    if m.kind != "ratio":
        raise ValueError(f"{name} is not a ratio")
    if num is None or den is None:
        return None
    return stats.ratio_of_means(num, den, paired=m.paired, absolute=m.absolute)


def ratio_of_parts(
    name: str, num: Mapping[str, Any] | None, den: Mapping[str, Any] | None, swing: str | None = None
) -> Estimate | None:
    """The ratio metric ``name`` of two parts' per-pair swings (``swing``, default the ratio's own ``of``)."""
    of = swing or metric(name).of
    return ratio(name, swing_values(of, num), swing_values(of, den))


def put(summary: dict[str, Any], name: str, est: Estimate | None) -> dict[str, Any]:
    """Write ``name`` and ``name_ci95`` into a summary (None when not measured)."""
    summary[name] = None if est is None else est.value
    summary[name + CI] = None if est is None else est.interval()
    return summary


def summarize(part: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every swing and the fluency cost of one part, each with its ``_ci95``."""
    out: dict[str, Any] = {}
    for name in (*SWINGS, "fluency_cost_at_1"):
        put(out, name, estimate(name, part, reference))
    return out


def paired(name: str, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> Estimate | None:
    """``a`` − ``b`` in the swing ``name``, pair by pair on the same pairs (None when either lacks it)."""
    va, vb = swing_values(name, a), swing_values(name, b)
    if va is None or vb is None or va.shape != vb.shape:
        return None
    return stats.paired_difference(va, vb)


def comparison_row(label: str, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any]:
    """One paired comparison of two parts: every swing's difference ``a − b`` and its interval."""
    row: dict[str, Any] = {"comparison": label}
    for name in SWINGS:
        put(row, name, paired(name, a, b))
    est = paired("margin_swing", a, b)
    row["n"] = None if est is None else est.n
    return row
