"""The release gate's rules (pure): every check recorded, required ones decide, the prompt required or recorded."""

from __future__ import annotations

import pytest

from steerkit.eval.config import GateConfig
from steerkit.eval.gate import decide, dose_response, safe_range


def summary(swing: float, cost: float = 0.02) -> dict:
    return {"margin_swing": swing, "win_swing": swing / 10, "fluency_cost_at_1": cost}


def names(d) -> dict[str, bool]:
    return {c.name: c.passed for c in d.checks}


def test_first_release_needs_fluency_and_beating_caa():
    d = decide(summary(5.0), GateConfig(), caa=summary(3.0), prompt=summary(6.0))
    assert d.decision == "promote"
    assert names(d) == {"fluency": True, "beats CAA": True, "beats the prompt": False}  # recorded, not required
    assert decide(summary(5.0, cost=0.2), GateConfig(), caa=summary(3.0)).decision == "hold"
    held = decide(summary(5.0), GateConfig(), caa=summary(5.5))
    assert held.decision == "hold" and held.reasons == ["margin_swing +5.000 vs CAA at the same norm +5.500"]
    assert decide(summary(5.0), GateConfig(beat_caa=False), caa=summary(5.5)).decision == "promote"
    assert decide(summary(5.0), GateConfig(beat_prompt="require"), caa=summary(3), prompt=summary(6)).decision == "hold"


@pytest.mark.parametrize(("candidate", "decision"), [(4.76, "promote"), (4.74, "hold"), (6.0, "promote")])
def test_not_worse_than_stable_within_the_tolerance(candidate, decision):
    d = decide(summary(candidate), GateConfig(tolerance=0.05), stable=summary(5.0), stable_version=3)
    assert d.decision == decision and names(d)["not worse than stable"] == (decision == "promote")


def test_a_changed_set_is_not_compared_and_the_same_file_is_unchanged():
    d = decide(summary(9.0), GateConfig(), stable=None, stable_version=2, set_changed="the set changed")
    assert d.decision == "hold" and d.reasons == ["not compared with stable v2: the set changed"]
    same = decide(summary(5.0), GateConfig(), stable=summary(5.0), stable_version=2, same_as_stable=True)
    assert same.decision == "unchanged"


def test_safe_range_and_dose_response():
    ppl = [{"multiplier": m, "fluency_cost": c} for m, c in ((-2, 0.3), (-1, 0.05), (0, 0.0), (1, 0.04), (2, 0.08))]
    assert safe_range(ppl, 0.1) == [-1, 1]  # −2 is over the limit, so ±2 is not safe
    assert safe_range(ppl, 0.5) == [-2, 2] and safe_range(ppl, 0.01) is None
    report = {"perplexity": ppl, "margin": [{"multiplier": m, "margin": m, "win_fraction": 0.5} for m in (-1, 1)]}
    assert dose_response(report) == [
        {"multiplier": -1, "margin": -1, "win_fraction": 0.5, "fluency_cost": 0.05},
        {"multiplier": 1, "margin": 1, "win_fraction": 0.5, "fluency_cost": 0.04},
    ]
