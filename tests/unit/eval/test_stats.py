"""Intervals: reproducible, right on average (coverage against a known truth), paired where the pairs are shared."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steerkit.eval import stats


def test_the_same_values_give_the_same_interval():
    x = np.random.default_rng(1).normal(2.0, 1.0, 20)
    a, b = stats.mean_of(x), stats.mean_of(list(x))
    assert a == b and a.ci95[0] < a.value < a.ci95[1] and a.n == 20
    assert a.value == pytest.approx(x.mean()) and a.sd == pytest.approx(x.std(ddof=1))


def test_95_percent_intervals_cover_the_truth_about_95_percent_of_the_time():
    """A skewed per-pair distribution (like margins), 20 pairs: the BCa interval covers the true mean ~95 %."""
    rng = np.random.default_rng(7)
    trials, hits = 300, 0
    for _ in range(trials):
        x = rng.gamma(2.0, 1.5, 20)  # true mean 3.0
        est = stats.bootstrap([x], lambda v, axis=-1: np.mean(v, axis=axis), resamples=1000)
        hits += est[0] <= 3.0 <= est[1]
    assert 0.89 <= hits / trials <= 0.985


def test_a_plain_percentile_bootstrap_agrees_with_the_library_interval():
    """The reference: resample pairs with replacement in a loop, take the 2.5 / 97.5 percentiles of the means."""
    x = np.random.default_rng(3).normal(1.0, 2.0, 30)
    rng = np.random.default_rng(11)
    means = [x[rng.integers(0, len(x), len(x))].mean() for _ in range(4000)]
    plain = np.percentile(means, [2.5, 97.5])
    ours = stats.mean_of(x).ci95
    width = plain[1] - plain[0]
    assert abs(ours[0] - plain[0]) < 0.08 * width and abs(ours[1] - plain[1]) < 0.08 * width


def test_a_paired_difference_is_the_mean_of_per_pair_differences_and_tighter():
    """Two methods on the same pairs share the pairs' difficulty: pairing removes it from the interval."""
    rng = np.random.default_rng(5)
    difficulty = rng.normal(0, 5.0, 20)
    a, b = difficulty + 11.4 + rng.normal(0, 0.1, 20), difficulty + 11.3 + rng.normal(0, 0.1, 20)
    d = stats.paired_difference(a, b)
    assert d.value == pytest.approx(np.mean(a - b)) and d == stats.mean_of(a - b)
    width = d.ci95[1] - d.ci95[0]
    separate = stats.mean_of(a).ci95[1] - stats.mean_of(a).ci95[0]
    assert width < separate / 10
    with pytest.raises(ValueError, match="same pairs"):
        stats.paired_difference(a, b[:-1])


def test_degenerate_and_tiny_samples():
    assert stats.mean_of([2.0, 2.0, 2.0]).ci95 == (2.0, 2.0)  # no spread: BCa is undefined, the interval is a point
    one = stats.mean_of([1.5])
    assert one.ci95 is None and one.value == 1.5 and one.sd is None
    with pytest.raises(ValueError):
        stats.mean_of([])
    with pytest.raises(ValueError, match="finite"):
        stats.mean_of([1.0, float("nan")])


def test_ratios_paired_and_independent():
    rng = np.random.default_rng(2)
    base = rng.normal(10.0, 2.0, 25)
    target = 0.7 * base + rng.normal(0, 0.2, 25)
    r = stats.ratio_of_means(target, base)
    assert r.value == pytest.approx(target.mean() / base.mean()) and r.ci95[0] < 0.7 < r.ci95[1] + 0.02
    other = rng.normal(-3.0, 1.0, 15)  # another behavior's pairs: another sample, another size
    share = stats.ratio_of_means(other, base, paired=False, absolute=True)
    assert share.value == pytest.approx(abs(other.mean()) / base.mean()) and share.ci95[0] > 0
    assert stats.ratio_of_means([1.0, 2.0], [1.0, -1.0]) is None  # mean of the denominator is 0


def test_fluency_cost_is_the_perplexity_ratio_of_summed_nlls():
    tokens = [5, 10, 15, 20]
    ref = [10.0, 21.0, 29.0, 41.0]
    up = [11.0, 22.0, 33.0, 44.0]
    down = [10.5, 21.0, 30.0, 41.0]
    est = stats.fluency_cost([(up, tokens), (down, tokens)], (ref, tokens))
    want = math.exp(sum(up) / 50 - sum(ref) / 50) - 1
    assert est.value == pytest.approx(want) and est.ci95[0] <= want <= est.ci95[1] and est.n == 4


def test_pairs_needed_follows_the_observed_spread():
    est = stats.Estimate(0.107, (-0.99, 1.25), 50, 4.0)
    assert stats.pairs_needed(est, 0.0) == math.ceil((stats.Z * 4.0 / 0.107) ** 2)
    assert stats.pairs_needed(est, 0.107) is None  # on the threshold: no number of pairs would do
    assert stats.pairs_needed(stats.Estimate(3.0, (2.0, 4.0), 20, 1.0), 0.0) == 20  # already enough
