"""The release gate: is a candidate vector worth shipping? (pure: estimates in, a decision and its reasons out)

Each rule is a test on an estimate with its 95 % interval, measured on the frozen held-out set in
the same run, and has three outcomes: **pass** (the interval clears the threshold on the good side),
**fail** (the estimate itself is on the wrong side: more pairs would not change that) and
**unclear** (the estimate is on the good side but the interval reaches over the threshold: more
pairs would tell; the check says about how many at the observed spread). The rules:

- **steers**: the candidate's own swing must clear ``min_effect`` (and zero): a vector that does
  not move its behavior is never promoted;
- **beats CAA** / **beats the prompt**: the paired difference candidate − CAA (− prompt) on the same
  pairs must be above zero (superiority);
- **not worse than stable**: the paired difference candidate − stable must be above −δ, with δ =
  ``tolerance`` × |stable's swing| (or ``tolerance`` in the metric's units): non-inferiority, so a
  retrained seed of the same recipe is not a regression;
- **fluency**: the fluency cost at m = ±1 must stay under ``max_fluency_cost`` (its upper bound);
- **off-target**: the vector's swing on every other behavior's pairs must be at most
  ``max_off_target_share`` of its own (recorded; ``off_target_rule: require`` makes it a rule);
- **seeds**: with several training seeds, their directions must agree (cosine ≥ ``min_seed_cosine``;
  recorded; ``seed_rule: require`` makes it a rule);
- **not rolled back**: a file a person rolled back out of stable is not released again by the gate.

The decision: **hold** if a required check fails, **inconclusive** if none fails but one is unclear,
**promote** if all pass; **unchanged** when the candidate already is the stable release (every check
still runs, and the reasons say when stable itself fails one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import (
    Any,
    Literal,
    NotRequired,  # pydantic builds the schema from it on Python 3.11
)

from typing_extensions import TypedDict

from .config import GateConfig
from .metrics import metric
from .stats import Estimate, pairs_needed

OUTCOMES = ("pass", "fail", "unclear")
DECISIONS = ("promote", "hold", "inconclusive", "unchanged")
#: the gate report's format: 2 = three outcomes (promote, hold, inconclusive) from intervals; paired comparisons
GATE_FORMAT_VERSION = 2


@dataclass
class Check:
    """One rule's test: its outcome, whether it decides, what it says, and the numbers behind it."""

    name: str
    outcome: str  # pass | fail | unclear
    required: bool
    detail: str
    value: float | None = None
    ci95: list[float] | None = None
    threshold: float | None = None
    pairs_needed: int | None = None  # unclear: held-out pairs that would settle it at the observed spread

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class Decision:
    """``promote``, ``hold``, ``inconclusive`` or ``unchanged``, and why."""

    decision: str
    checks: list[Check] = field(default_factory=list)
    stable_fails: list[str] = field(default_factory=list)  # unchanged: the required checks stable itself fails

    @property
    def reasons(self) -> list[str]:
        """What decided it: the failed (hold) or unclear (inconclusive) required checks, else every check."""
        required = [c for c in self.checks if c.required]
        if self.decision == "hold":
            return [c.detail for c in required if c.outcome == "fail"]
        if self.decision == "inconclusive":
            return [c.detail for c in required if c.outcome == "unclear"]
        if self.decision == "unchanged" and self.stable_fails:
            return [f"the stable release itself fails: {d}" for d in self.stable_fails]
        return [c.detail for c in self.checks]

    @property
    def pairs_needed(self) -> int | None:
        """Inconclusive: the held-out pairs the most demanding unclear check would need (None: unknown)."""
        needs = [c.pairs_needed for c in self.checks if c.required and c.outcome == "unclear"]
        return max((n for n in needs if n is not None), default=None) if needs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reasons": self.reasons,
            "pairs_needed": self.pairs_needed if self.decision == "inconclusive" else None,
            "checks": [c.to_dict() for c in self.checks],
            **({"stable_fails": self.stable_fails} if self.stable_fails else {}),
        }


@dataclass(frozen=True)
class Evidence:
    """What the gate measured, as estimates with intervals (``None``: not measured)."""

    own: Estimate | None  # the candidate's swing in the gate's metric
    fluency: Estimate | None = None  # its fluency cost at m = ±1
    vs_caa: Estimate | None = None  # candidate − CAA at its norm, paired
    vs_prompt: Estimate | None = None  # candidate − the prompt baseline, paired
    vs_stable: Estimate | None = None  # candidate − stable, paired
    stable: Estimate | None = None  # stable's swing (the non-inferiority margin is a share of it)
    off_target: dict[str, Estimate | None] = field(default_factory=dict)  # other behavior: share of own swing
    seed_cosine: float | None = None  # the smallest cosine between the seeds' directions (None: one seed)


def _ci(est: Estimate | None) -> list[float] | None:
    return None if est is None else est.interval()


def _show(name: str, est: Estimate | None) -> str:
    return "n/a" if est is None else metric(name).show(est.value, est.interval())


def _test(est: Estimate | None, threshold: float, higher_is_better: bool = True) -> str:
    """pass / fail / unclear of ``est`` against ``threshold`` (a missing estimate fails)."""
    if est is None:
        return "fail"
    if est.ci95 is not None and (est.low > threshold if higher_is_better else est.high <= threshold):
        return "pass"
    wrong = est.value <= threshold if higher_is_better else est.value > threshold
    return "fail" if wrong else "unclear"


def _check(
    name: str, est: Estimate | None, threshold: float, required: bool, detail: str, higher: bool = True
) -> Check:
    outcome = _test(est, threshold, higher)
    need = pairs_needed(est, threshold) if outcome == "unclear" and est is not None else None
    if outcome == "unclear" and est is not None and est.ci95 is None:
        detail += " — one value has no interval: more data would tell"
    elif outcome == "unclear":
        detail += (
            f" — the interval reaches over {threshold:+.3g}: about {need} held-out pairs would tell"
            if need
            else f" — the interval reaches over {threshold:+.3g}: more data would tell"
        )
    return Check(name, outcome, required, detail, None if est is None else est.value, _ci(est), threshold, need)


def decide(
    evidence: Evidence,
    cfg: GateConfig,
    *,
    stable_version: int | None = None,
    set_changed: str | None = None,
    stable_unjudged: bool = False,
    same_as_stable: bool = False,
    rolled_back: str | None = None,
) -> Decision:
    """The decision for one candidate from the gate's evidence.

    ``stable_version``: the stable release's number (None: nothing released yet); ``set_changed``: why
    the held-out set is not the one stable was judged on (then stable is not compared and the
    candidate is held); ``stable_unjudged``: stable was promoted by hand and records no held-out set
    (compared on this one, and said); ``same_as_stable``: the candidate is the stable release;
    ``rolled_back``: why a person rolled back this very file (it is held: re-releasing it is a person's call).
    """
    m, ev = cfg.metric, evidence
    floor = max(0.0, cfg.min_effect)
    checks = [
        _check(
            "steers",
            ev.own,
            floor,
            True,
            f"{m} {_show(m, ev.own)} must clear {floor:+.3g} (the vector must move its own behavior)",
        ),
        _check(
            "fluency",
            ev.fluency,
            cfg.max_fluency_cost,
            True,
            f"fluency cost at m = ±1 {_show('fluency_cost_at_1', ev.fluency)} "
            f"(limit {cfg.max_fluency_cost:.0%}, upper bound)",
            higher=False,
        ),
    ]
    if ev.vs_caa is not None or cfg.beat_caa:
        checks.append(
            _check(
                "beats CAA",
                ev.vs_caa,
                0.0,
                cfg.beat_caa,
                f"candidate − CAA at the same norm, paired: {_show(m, ev.vs_caa)}",
            )
        )
    if ev.vs_prompt is not None:
        req = cfg.beat_prompt == "require"
        checks.append(
            _check(
                "beats the prompt",
                ev.vs_prompt,
                0.0,
                req,
                f"candidate − the prompt baseline, paired: {_show(m, ev.vs_prompt)} "
                f"({'required' if req else 'recorded only'})",
            )
        )
    if stable_version is not None and not same_as_stable:  # there is another stable release to measure up to
        if set_changed:
            checks.append(
                Check(
                    "comparable to stable", "fail", True, f"not compared with stable v{stable_version}: {set_changed}"
                )
            )
        else:
            share = cfg.tolerance_unit == "share"
            delta = cfg.tolerance * abs(ev.stable.value) if share and ev.stable is not None else cfg.tolerance
            detail = (
                f"candidate − stable v{stable_version} (swing {_show(m, ev.stable)}), paired: "
                f"{_show(m, ev.vs_stable)}, must stay above −{delta:.3g}"
                + (f" ({cfg.tolerance:.0%} of stable's swing)" if share else "")
            )
            if stable_unjudged:
                detail += (
                    f"; stable v{stable_version} was promoted by hand and records no held-out set: compared on this one"
                )
            checks.append(_check("not worse than stable", ev.vs_stable, -delta, True, detail))
    for other, share in sorted(ev.off_target.items()):
        said = "required" if cfg.off_target_rule == "require" else "recorded"
        checks.append(
            _check(
                f"off-target: {other}",
                share,
                cfg.max_off_target_share,
                cfg.off_target_rule == "require",
                f"its swing on {other}'s pairs is {_show('off_target_share', share)} of its own "
                f"(at most {cfg.max_off_target_share:.2f}; {said})",
                higher=False,
            )
        )
    if ev.seed_cosine is not None:
        ok = ev.seed_cosine >= cfg.min_seed_cosine
        checks.append(
            Check(
                "seeds agree",
                "pass" if ok else "fail",
                cfg.seed_rule == "require",
                f"smallest cosine between the seeds' directions {ev.seed_cosine:.3f} "
                f"(at least {cfg.min_seed_cosine:.2f}; {'required' if cfg.seed_rule == 'require' else 'recorded'})",
                ev.seed_cosine,
                None,
                cfg.min_seed_cosine,
            )
        )
    if rolled_back:
        checks.append(
            Check(
                "not rolled back",
                "fail",
                True,
                f"{rolled_back}; a person promotes it again if it is wanted (`steerkit catalog promote --version N`)",
            )
        )
    required = [c for c in checks if c.required]
    if same_as_stable:
        return Decision("unchanged", checks, [c.detail for c in required if c.outcome != "pass"])
    if any(c.outcome == "fail" for c in required):
        return Decision("hold", checks)
    if any(c.outcome == "unclear" for c in required):
        return Decision("inconclusive", checks)
    return Decision("promote", checks)


# ------------------------------------------------------------------------------- the report's type
class CheckRecord(TypedDict):
    """One check as the gate report keeps it."""

    name: str
    outcome: Literal["pass", "fail", "unclear"]
    passed: bool
    required: bool
    detail: str
    value: float | None
    ci95: list[float] | None
    threshold: float | None
    pairs_needed: int | None


class CandidateRecord(TypedDict):
    path: str
    sha256: str
    summary: dict[str, Any]


class StableRecord(TypedDict):
    version: int
    sha256: str
    summary: dict[str, Any] | None  # None: not measured (the held-out set changed)
    released: str
    judged_on: str | None  # the held-out set it was released on (None: promoted by hand without a gate)


class FrozenSet(TypedDict):
    path: str
    sha256: str
    n_test: int
    stable_sha256: str | None
    changed: str | None


class GateReport(TypedDict):
    """``reports/gate/<model>/<behavior>.json``: what the gate decided, and every number behind it.

    Downstream tools read ``decision`` (promote, hold, inconclusive, unchanged), ``reasons`` and ``checks``;
    the catalog stage releases on ``decision`` = promote if stable is still ``stable`` (its sha256).
    """

    kind: Literal["gate"]
    format_version: int
    behavior: str
    model: str
    method: str
    decision: Literal["promote", "hold", "inconclusive", "unchanged"]
    reasons: list[str]
    pairs_needed: int | None
    checks: list[CheckRecord]
    stable_fails: NotRequired[list[str]]
    candidate: CandidateRecord
    stable: StableRecord | None
    caa: dict[str, Any] | None
    prompt: dict[str, Any] | None
    comparison: list[dict[str, Any]] | None
    paired: dict[str, dict[str, Any]]
    frozen_set: FrozenSet
    off_target: dict[str, dict[str, Any]]
    dose_response: list[dict[str, Any]]
    safe_range: list[float] | None
    evaluation: str
    config: dict[str, dict[str, Any]]


def safe_range(perplexity: list[dict[str, Any]], max_cost: float) -> list[float] | None:
    """The widest [−m, m] over the evaluated multipliers whose fluency cost stays under ``max_cost`` at both ends."""
    cost = {r["multiplier"]: r["fluency_cost"] for r in perplexity}
    best = None
    for m in sorted(x for x in cost if x > 0):
        if -m not in cost or max(cost[m], cost[-m]) > max_cost:
            break
        best = m
    return None if best is None else [-best, best]


def dose_response(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Margin, win fraction and fluency cost at each evaluated multiplier (what a downstream app reads)."""
    cost = {r["multiplier"]: r["fluency_cost"] for r in report.get("perplexity") or []}
    return [
        {
            "multiplier": r["multiplier"],
            "margin": r["margin"],
            "win_fraction": r["win_fraction"],
            "fluency_cost": cost.get(r["multiplier"]),
        }
        for r in report["margin"]
    ]
