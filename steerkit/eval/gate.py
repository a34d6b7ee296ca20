"""The release gate: is a candidate vector worth shipping? (pure: numbers in, a decision and its reasons out)

A candidate is promoted only if — on the same frozen held-out set, measured in the same run — it is
at least as good as the vector already released (within a tolerance), beats CAA at the same norm,
stays under the fluency limit at m = ±1, and (when required) beats the prompt baseline. Every check
is recorded, passed or not, so a held candidate says why. A held-out set that changed since the
stable release was judged on it is said out loud and not compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .config import GateConfig


@dataclass
class Check:
    name: str
    passed: bool
    required: bool
    detail: str


@dataclass
class Decision:
    """``promote``, ``hold`` or ``unchanged`` (the candidate is the stable release already), and why."""

    decision: str
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """What decided it: the failed required checks when held, every check otherwise."""
        failed = [c for c in self.checks if c.required and not c.passed]
        return [c.detail for c in (failed if self.decision == "hold" and failed else self.checks)]

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def decide(
    candidate: dict[str, Any],
    cfg: GateConfig,
    *,
    caa: dict[str, Any] | None = None,
    prompt: dict[str, Any] | None = None,
    stable: dict[str, Any] | None = None,
    stable_version: int | None = None,
    set_changed: str | None = None,
    same_as_stable: bool = False,
) -> Decision:
    """The decision for one candidate from the summaries of its evaluation and the alternatives'.

    ``candidate``/``caa``/``stable``: evaluation summaries (``margin_swing``, ``fluency_cost_at_1``, ...);
    ``prompt``: the prompt baseline's summary; ``stable_version``: the stable release's number (None:
    nothing released yet); ``set_changed``: why the held-out set is not the one the stable release was
    judged on (then stable is not compared and the candidate is held).
    """
    m = cfg.metric
    c = candidate.get(m)
    checks: list[Check] = []
    cost = candidate.get("fluency_cost_at_1")
    checks.append(
        Check(
            "fluency",
            cost is not None and cost <= cfg.max_fluency_cost,
            True,
            f"fluency cost at m = ±1: {'n/a' if cost is None else f'{cost:.1%}'} (limit {cfg.max_fluency_cost:.0%})",
        )
    )
    if caa is not None:
        checks.append(
            Check(
                "beats CAA",
                c is not None and caa.get(m) is not None and c > caa[m],
                cfg.beat_caa,
                f"{m} {_fmt(c)} vs CAA at the same norm {_fmt(caa.get(m))}",
            )
        )
    if prompt is not None:
        checks.append(
            Check(
                "beats the prompt",
                c is not None and prompt.get(m) is not None and c > prompt[m],
                cfg.beat_prompt == "require",
                f"{m} {_fmt(c)} vs the prompt baseline {_fmt(prompt.get(m))} "
                f"({'required' if cfg.beat_prompt == 'require' else 'recorded only'})",
            )
        )
    if stable_version is not None:  # there is a stable release to measure up to
        if set_changed:
            checks.append(
                Check("comparable to stable", False, True, f"not compared with stable v{stable_version}: {set_changed}")
            )
        else:
            s = (stable or {}).get(m)
            floor = None if s is None else s - cfg.tolerance * abs(s)
            checks.append(
                Check(
                    "not worse than stable",
                    c is not None and floor is not None and c >= floor,
                    True,
                    f"{m} {_fmt(c)} vs stable v{stable_version} {_fmt(s)} "
                    f"(at least {_fmt(floor)} with a {cfg.tolerance:.0%} tolerance)",
                )
            )
    if same_as_stable:
        return Decision("unchanged", checks)
    return Decision("promote" if all(k.passed or not k.required for k in checks) else "hold", checks)


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
