"""The release gate's rules (pure): each a test on an interval with three outcomes, required ones decide.

Estimates are built from per-pair values with the same code the gate stage uses (``steerkit.eval.stats``).
"""

from __future__ import annotations

import numpy as np
import pytest

from steerkit.eval.config import GateConfig
from steerkit.eval.gate import Evidence, decide, dose_response, safe_range
from steerkit.eval.stats import Estimate, mean_of


def pairs(mean: float, sd: float = 0.5, n: int = 40, seed: int = 0) -> Estimate:
    """A mean over n pairs whose values spread by sd around ``mean`` (exactly that mean)."""
    x = np.random.default_rng(seed).normal(0, 1, n)
    return mean_of(mean + sd * (x - x.mean()) / x.std(ddof=1))


def cost(value: float, width: float = 0.01) -> Estimate:
    return Estimate(value, (value - width, value + width), 22)


def evidence(**kw) -> Evidence:
    base = {"own": pairs(5.0), "fluency": cost(0.02), "vs_caa": pairs(2.0), "vs_prompt": pairs(-1.0)}
    return Evidence(**{**base, **kw})


def outcomes(d) -> dict[str, str]:
    return {c.name: c.outcome for c in d.checks}


def test_first_release_needs_a_vector_that_steers_is_fluent_and_beats_caa():
    d = decide(evidence(), GateConfig())
    assert d.decision == "promote"
    assert outcomes(d) == {"steers": "pass", "fluency": "pass", "beats CAA": "pass", "beats the prompt": "fail"}
    assert not next(c for c in d.checks if c.name == "beats the prompt").required  # recorded, not required
    assert decide(evidence(fluency=cost(0.2)), GateConfig()).decision == "hold"
    held = decide(evidence(vs_caa=pairs(-0.5)), GateConfig())
    assert held.decision == "hold" and len(held.reasons) == 1 and "candidate − CAA" in held.reasons[0]
    assert decide(evidence(vs_caa=pairs(-0.5)), GateConfig(beat_caa=False)).decision == "promote"
    assert decide(evidence(), GateConfig(beat_prompt="require")).decision == "hold"


def test_a_vector_that_does_not_steer_is_never_promoted():
    """The sycophancy case: +0.107 with an interval over zero → inconclusive, with the pairs it would need;
    a random direction (a negative swing) → hold. Whatever CAA or the prompt did."""
    syco = decide(
        evidence(own=pairs(0.107, sd=4.0, n=50), vs_caa=pairs(0.17, sd=4.0, n=50)), GateConfig(beat_caa=False)
    )
    assert syco.decision == "inconclusive"
    steers = next(c for c in syco.checks if c.name == "steers")
    assert steers.outcome == "unclear" and steers.ci95[0] < 0 < steers.ci95[1]
    assert steers.pairs_needed == pytest.approx((1.96 * 4.0 / 0.107) ** 2, rel=0.01) and syco.pairs_needed > 5000
    assert "held-out pairs would tell" in syco.reasons[0]
    random = decide(evidence(own=pairs(-0.16, sd=1.0, n=20)), GateConfig(beat_caa=False))
    assert random.decision == "hold" and "must clear" in random.reasons[0]
    # a minimum effect: a clear but tiny swing is held
    assert decide(evidence(own=pairs(0.3, sd=0.1)), GateConfig(min_effect=1.0)).decision == "hold"


def test_superiority_over_caa_is_a_paired_interval_above_zero():
    assert decide(evidence(vs_caa=pairs(0.1, sd=1.0, n=20)), GateConfig()).decision == "inconclusive"
    assert decide(evidence(vs_caa=pairs(0.0, sd=1.0, n=20)), GateConfig()).decision == "hold"
    assert decide(evidence(vs_caa=pairs(1.0, sd=1.0, n=20)), GateConfig()).decision == "promote"


@pytest.mark.parametrize(
    ("diff", "sd", "decision"),
    [
        (-0.04, 0.13, "promote"),  # a retrained seed (measured: −0.04 [−0.09, +0.02] on 11.38): not a regression
        (0.16, 0.2, "promote"),
        (-5.7, 1.0, "hold"),  # the same vector at half its norm: clearly worse, the interval excludes stable
        (-0.5, 1.0, "inconclusive"),  # within the margin on average, but the interval reaches past −0.57
        (-0.7, 0.05, "hold"),
    ],
)
def test_not_worse_than_stable_is_a_non_inferiority_test(diff, sd, decision):
    ev = evidence(
        own=pairs(11.38 + diff, sd=3.0, n=20), vs_stable=pairs(diff, sd=sd, n=20), stable=pairs(11.38, 3.0, 20)
    )
    d = decide(ev, GateConfig(tolerance=0.05), stable_version=3)
    check = next(c for c in d.checks if c.name == "not worse than stable")
    assert d.decision == decision and check.threshold == pytest.approx(-0.05 * 11.38)
    assert check.outcome == {"promote": "pass", "hold": "fail", "inconclusive": "unclear"}[decision]
    metric_units = decide(ev, GateConfig(tolerance=10.0, tolerance_unit="metric"), stable_version=3)
    assert metric_units.decision == "promote"


def test_fluency_is_an_upper_bound():
    assert decide(evidence(fluency=cost(0.09, width=0.005)), GateConfig()).decision == "promote"
    assert decide(evidence(fluency=cost(0.09, width=0.03)), GateConfig()).decision == "inconclusive"
    assert decide(evidence(fluency=cost(0.11, width=0.03)), GateConfig()).decision == "hold"


def test_off_target_is_recorded_by_default_and_requirable():
    ev = evidence(off_target={"wealth": Estimate(0.8, (0.6, 1.0), 20), "other": Estimate(0.1, (0.0, 0.2), 20)})
    d = decide(ev, GateConfig())
    assert d.decision == "promote" and outcomes(d)["off-target: wealth"] == "fail"
    assert outcomes(d)["off-target: other"] == "pass"
    required = decide(ev, GateConfig(off_target_rule="require"))
    assert required.decision == "hold" and "wealth's pairs" in required.reasons[0]


def test_seed_agreement_is_recorded_and_requirable():
    ev = evidence(seed_cosine=0.7)
    assert (
        decide(ev, GateConfig()).decision == "promote" and outcomes(decide(ev, GateConfig()))["seeds agree"] == "fail"
    )
    assert decide(ev, GateConfig(seed_rule="require")).decision == "hold"
    assert decide(evidence(seed_cosine=0.95), GateConfig(seed_rule="require")).decision == "promote"


def test_a_changed_set_is_not_compared_and_unchanged_still_runs_every_check():
    d = decide(evidence(), GateConfig(), stable_version=2, set_changed="the set changed")
    assert d.decision == "hold" and d.reasons == ["not compared with stable v2: the set changed"]
    same = decide(evidence(), GateConfig(), stable_version=2, same_as_stable=True)
    assert same.decision == "unchanged" and not same.stable_fails
    assert "not worse than stable" not in outcomes(same)  # it is stable
    tightened = decide(evidence(), GateConfig(max_fluency_cost=0.01), stable_version=2, same_as_stable=True)
    assert tightened.decision == "unchanged" and tightened.stable_fails
    assert tightened.reasons[0].startswith("the stable release itself fails: fluency cost")


def test_a_stable_release_promoted_by_hand_is_compared_and_said():
    ev = evidence(vs_stable=pairs(0.5), stable=pairs(4.5))
    d = decide(ev, GateConfig(), stable_version=2, stable_unjudged=True)
    check = next(c for c in d.checks if c.name == "not worse than stable")
    assert "promoted by hand and records no held-out set" in check.detail and check.outcome == "pass"


def test_a_rolled_back_file_is_held_whatever_its_numbers():
    ev = evidence(vs_stable=pairs(3.0), stable=pairs(2.0))
    d = decide(ev, GateConfig(), stable_version=1, rolled_back="v2 (this file) was rolled back by ops: bad")
    assert d.decision == "hold" and d.reasons == [next(c.detail for c in d.checks if c.name == "not rolled back")]
    assert d.reasons[0].startswith("v2 (this file) was rolled back by ops")


def test_the_report_form_is_json_ready():
    import json

    d = decide(evidence(own=pairs(0.1, sd=1.0, n=20)), GateConfig())
    out = json.loads(json.dumps(d.to_dict()))
    assert out["decision"] == "inconclusive" and out["pairs_needed"] > 20
    assert {"name", "outcome", "required", "detail", "value", "ci95", "threshold", "pairs_needed", "passed"} <= set(
        out["checks"][0]
    )


def test_safe_range_and_dose_response():
    ppl = [{"multiplier": m, "fluency_cost": c} for m, c in ((-2, 0.3), (-1, 0.05), (0, 0.0), (1, 0.04), (2, 0.08))]
    assert safe_range(ppl, 0.1) == [-1, 1]  # −2 is over the limit, so ±2 is not safe
    assert safe_range(ppl, 0.5) == [-2, 2] and safe_range(ppl, 0.01) is None
    report = {"perplexity": ppl, "margin": [{"multiplier": m, "margin": m, "win_fraction": 0.5} for m in (-1, 1)]}
    assert dose_response(report) == [
        {"multiplier": -1, "margin": -1, "win_fraction": 0.5, "fluency_cost": 0.05},
        {"multiplier": 1, "margin": 1, "win_fraction": 0.5, "fluency_cost": 0.04},
    ]
