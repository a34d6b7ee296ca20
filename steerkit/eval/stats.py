"""How sure a number measured on held-out pairs is: 95 % bootstrap intervals, paired differences, sample sizes.

Every number a report gives is a statistic of per-pair (or per-text) values: a mean, a ratio of
means, a fluency cost from summed log-likelihoods. Its interval is a bootstrap over the pairs
(``scipy.stats.bootstrap``, BCa; percentile where BCa is undefined, e.g. all values equal), seeded so
that the same values always give the same interval. Two methods measured on the same pairs are
compared by resampling pairs, not methods (``paired=True``): the interval of the difference is
then far tighter than two separate intervals suggest. ``pairs_needed`` says how many pairs an
interval that straddles a threshold would need to clear it, at the observed spread.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
Z = 1.959963984540054  # the standard normal's 97.5 % point: a two-sided 95 % interval
RESAMPLES = 4000
SEED = 0  # fixed: the same per-pair values give the same interval, run after run


@dataclass(frozen=True)
class Estimate:
    """A statistic, its 95 % interval (None: fewer than two values) and the per-pair spread behind it."""

    value: float
    ci95: tuple[float, float] | None
    n: int
    sd: float | None = None  # per-pair standard deviation of a mean's values (what sample sizes come from)

    @property
    def low(self) -> float | None:
        return None if self.ci95 is None else self.ci95[0]

    @property
    def high(self) -> float | None:
        return None if self.ci95 is None else self.ci95[1]

    def above(self, threshold: float) -> bool:
        """The whole interval lies above ``threshold`` (shown to exceed it)."""
        return self.ci95 is not None and self.ci95[0] > threshold

    def below(self, threshold: float) -> bool:
        """The whole interval lies below ``threshold`` (shown to fall short of it)."""
        return self.ci95 is not None and self.ci95[1] < threshold

    def interval(self) -> list[float] | None:
        """The interval as JSON writes it (``[low, high]``)."""
        return None if self.ci95 is None else [self.ci95[0], self.ci95[1]]


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"per-pair values must be one list, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("per-pair values must be finite numbers")
    return arr


def bootstrap(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., Any],
    *,
    paired: bool = True,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> tuple[float, float] | None:
    """The 95 % interval of ``statistic(*samples, axis=-1)`` by a seeded bootstrap (None below two values).

    ``paired``: the samples are measurements of the same items (resampled together); otherwise
    each sample is resampled on its own (e.g. a vector's effect on two behaviors' pair sets).
    """
    if any(len(s) < 2 for s in samples):
        return None
    from scipy.stats import bootstrap as scipy_bootstrap

    point = float(statistic(*samples, axis=-1))
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate data: BCa is NaN, the percentile method takes over
            res = scipy_bootstrap(
                tuple(samples),
                statistic,
                n_resamples=resamples,
                confidence_level=CONFIDENCE,
                method=method,
                paired=paired,
                vectorized=True,
                random_state=np.random.default_rng(seed),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return (min(lo, point), max(hi, point))
    return (point, point)  # pragma: no cover - the percentile interval of finite values is finite


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def mean_of(values: Sequence[float] | np.ndarray, seed: int = SEED) -> Estimate:
    """The mean of per-pair values and its interval."""
    arr = _finite(values)
    if not len(arr):
        raise ValueError("no values to estimate from")
    sd = float(np.std(arr, ddof=1)) if len(arr) > 1 else None
    return Estimate(float(arr.mean()), bootstrap([arr], _mean, seed=seed), len(arr), sd)


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, seed: int = SEED) -> Estimate:
    """Mean of ``a − b`` over the same pairs (same order) and its interval: a paired comparison."""
    a, b = _finite(a), _finite(b)
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs the same pairs: {len(a)} values against {len(b)}")
    return mean_of(a - b, seed)


def _ratio(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    top, bottom = np.mean(num, axis=axis), np.mean(den, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom == 0, np.nan, top / np.where(bottom == 0, 1.0, bottom))


def ratio_of_means(
    num: Sequence[float] | np.ndarray,
    den: Sequence[float] | np.ndarray,
    *,
    paired: bool = True,
    absolute: bool = False,
    seed: int = SEED,
) -> Estimate | None:
    """mean(num) / mean(den) and its interval (None when mean(den) is 0).

    ``paired``: num and den are measured on the same pairs (a retention: the same pairs on two
    models); else two independent pair sets (a vector's swing on another behavior's pairs over its
    own). ``absolute``: |mean(num)| / mean(den) (a share of the effect, whatever its sign). An
    interval whose resamples divide by ~0 is unbounded and given as None.
    """
    num, den = _finite(num), _finite(den)
    if paired and len(num) != len(den):
        raise ValueError(f"a paired ratio needs the same pairs: {len(num)} values against {len(den)}")
    if not len(num) or not len(den) or den.mean() == 0:
        return None

    def stat(n: np.ndarray, d: np.ndarray, axis: int = -1) -> np.ndarray:
        r = _ratio(n, d, axis)
        return np.abs(r) if absolute else r

    value = float(stat(num, den))
    ci = bootstrap([num, den], stat, paired=paired, seed=seed)
    return Estimate(value, ci if ci is None or all(map(math.isfinite, ci)) else None, len(den))


def fluency_cost(
    steered: Sequence[tuple[Sequence[float], Sequence[float]]],
    reference: tuple[Sequence[float], Sequence[float]],
    seed: int = SEED,
) -> Estimate:
    """The largest ppl(steered)/ppl(reference) − 1 over ``steered``, from per-text (NLL, token count) lists.

    Perplexity is exp(Σ NLL / Σ tokens) over the texts; every list covers the same texts in the same
    order, so the texts are resampled together.
    """
    arrays = [_finite(x) for pair in (*steered, reference) for x in pair]
    k = len(steered)

    def stat(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
        ref = np.sum(xs[-2], axis=axis) / np.sum(xs[-1], axis=axis)
        costs = [np.exp(np.sum(xs[2 * i], axis=axis) / np.sum(xs[2 * i + 1], axis=axis) - ref) - 1 for i in range(k)]
        return np.max(np.stack(costs), axis=0)

    return Estimate(float(stat(*arrays)), bootstrap(arrays, stat, seed=seed), len(arrays[0]))


def pairs_needed(estimate: Estimate, threshold: float) -> int | None:
    """How many pairs a mean's interval would need to clear ``threshold`` at the observed spread (None: never).

    The 95 % half-width is about 1.96 · sd / √n; it clears the threshold once that is under
    |estimate − threshold|. None when the estimate sits on the threshold or has no spread.
    """
    gap = abs(estimate.value - threshold)
    if estimate.sd is None or gap == 0:
        return None
    if estimate.sd == 0:
        return estimate.n
    return max(estimate.n, math.ceil((Z * estimate.sd / gap) ** 2))
