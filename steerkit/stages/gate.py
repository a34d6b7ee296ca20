"""The gate stage: is a behavior's candidate vector worth shipping? → ``reports/gate/<model>/<behavior>.json``.

It builds on the evaluation report of the same run (the candidate, CAA at its norm, the prompt
baseline and the vector with the prompt, all measured on the frozen held-out set) and measures,
with the same code, configuration and pairs, what that report cannot know: the stable release of
the behavior, and the candidate's off-target effects (its swing on every other behavior's held-out
pairs, beside CAA's at the same norm). ``steerkit.eval.gate`` decides; the report holds the decision,
every number behind it, the dose-response and the safe range. Releasing is the catalog stage's: a
held candidate stays a candidate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog.releases import History, locked
from ..config import to_plain
from ..data.readers import load_pairs
from ..data.texts import neutral_texts
from ..errors import DataError
from ..eval import metrics
from ..eval.config import EvalConfig, GateConfig
from ..eval.curves import margin_curve, pair_runner
from ..eval.gate import GATE_FORMAT_VERSION, Evidence, GateReport, decide, dose_response, safe_range
from ..eval.report import evaluate_vector, scale_to_norm
from ..fileio import atomic_write_json, sha256_file
from ..layout import report_path
from ..models import LoadedModel, load_model
from ..vector import SteeringVector


@dataclass
class Gated:
    """The gate's report and where it was written."""

    report: dict[str, Any]
    json: Path

    @property
    def decision(self) -> str:
        return self.report["decision"]


def _read_evaluation(path: Path, vector_sha: str, test_sha: str) -> dict[str, Any]:
    """The evaluation report, checked to be about this vector file on this held-out set."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        summary = report["summary"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"not a readable evaluation report ({type(exc).__name__}: {exc})",
            where=str(path),
            fix="run the evaluate stage first (`steerkit pipeline stage evaluate BEHAVIOR`)",
        ) from None
    if report.get("vector_sha256") != vector_sha or report.get("test_sha256") != test_sha:
        raise DataError(
            "the evaluation report is about another vector file or held-out set than the gate was given",
            where=str(path),
            fix="re-run `steerkit evaluate` for this vector and test file (dvc repro does it in order)",
        )
    if not isinstance(summary, dict):
        raise DataError("the evaluation report's summary is not an object", where=str(path))
    return report


def _relative(path: str | Path, root: str | Path) -> str:
    """``path`` as a posix path relative to the project root when it lies inside it."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _off_target(
    lm: LoadedModel,
    vec: SteeringVector,
    baseline: SteeringVector | None,
    report: dict[str, Any],
    off_target: Mapping[str, str | Path],
    limit: int | None,
    cfg: EvalConfig,
) -> dict[str, dict[str, Any]]:
    """Per other behavior: the vector's (and CAA's) swings on its held-out pairs, and their share of its own."""
    ends = [min(cfg.multipliers), max(cfg.multipliers)]
    out: dict[str, dict[str, Any]] = {}
    for other, path in off_target.items():
        runner = pair_runner(lm.model, lm.tokenizer, load_pairs(path, limit), cfg.batch_size)
        part = {"margin": margin_curve(lm.model, lm.tokenizer, [], vec, ends, runner=runner)}
        effect: dict[str, Any] = {}
        for name in ("margin_swing", "win_swing"):
            metrics.put(effect, name, metrics.estimate(name, part))
        share = metrics.ratio_of_parts("off_target_share", part, report)
        metrics.put(effect, "off_target_share", share)
        if baseline is not None:
            caa_part = {"margin": margin_curve(lm.model, lm.tokenizer, [], baseline, ends, runner=runner)}
            metrics.put(effect, "caa_margin_swing", metrics.estimate("margin_swing", caa_part))
        out[other] = {"effect": effect, "share": share}
    return out


def gate(
    vector_file: str | Path,
    test_file: str | Path,
    evaluation: str | Path,
    out: str | Path | None = None,
    *,
    model: str | LoadedModel,
    cfg: EvalConfig | None = None,
    rules: GateConfig | None = None,
    caa: str | Path | None = None,
    off_target: Mapping[str, str | Path] | None = None,
    limit: int | None = None,
    texts: str | Path | None = None,
    root: str | Path = ".",
    device: str | None = None,
    dtype: str | None = None,
) -> Gated:
    """Judge the candidate against stable, CAA and the prompt on ``test_file``; write the gate report.

    ``evaluation`` is the candidate's evaluation report (``steerkit evaluate`` with the same ``cfg``,
    ``limit`` and ``texts``); ``off_target`` maps other behaviors to their held-out pairs.
    """
    cfg, rules = cfg or EvalConfig(), rules or GateConfig()
    vec = SteeringVector.load(vector_file)
    behavior, method = vec.meta.get("behavior") or Path(vector_file).parent.name, vec.meta.get("method") or "bipo"
    spec = model.name if isinstance(model, LoadedModel) else model
    model_id = str(vec.meta.get("model") or spec)  # releases are keyed by the model the vector records
    out = Path(out) if out is not None else report_path(root, "gate", spec, behavior)
    vector_sha, test_sha = sha256_file(vector_file), sha256_file(test_file)
    report = _read_evaluation(Path(evaluation), vector_sha, test_sha)
    pairs = load_pairs(test_file, limit)
    if report.get("config") not in (None, to_plain(cfg)):
        raise DataError(
            "the evaluation was made with another evaluate configuration than the gate's",
            where=str(evaluation),
            fix="give the gate the evaluate stage's configuration (params.yaml evaluate:)",
        )
    if report.get("n_test") != len(pairs):
        raise DataError(
            f"the evaluation used {report.get('n_test')} held-out pairs, the gate {len(pairs)}",
            where=str(evaluation),
            fix="give the gate the evaluate stage's limit",
        )
    with locked(root):  # one consistent view of the history; releasing re-checks it (compare-and-swap)
        history = History.load(root)
    stable = history.stable(behavior, model_id, method)
    changed = None
    if stable is not None and stable.test_sha256 and stable.test_sha256 != test_sha:
        changed = (
            f"the held-out set {test_file} changed since v{stable.version} was judged on it "
            f"(sha256 {stable.test_sha256[:12]} → {test_sha[:12]})"
        )
    same = stable is not None and stable.sha256 == vector_sha
    lm = None
    if (stable is not None and not same and not changed) or off_target:
        lm = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
    stable_part = None
    if lm is not None and stable is not None and not same and not changed:  # measured as the candidate was
        stable_vec = SteeringVector.from_bytes(history.read(stable), where=stable.path)
        stable_part = evaluate_vector(lm.model, lm.tokenizer, stable_vec, pairs, cfg, texts=neutral_texts(texts))
    elif same:
        stable_part = report
    m = rules.metric
    baseline = scale_to_norm(SteeringVector.load(caa), vec.norm()) if caa else None
    effects = _off_target(lm, vec, baseline, report, off_target or {}, limit, cfg) if off_target else {}
    evidence = Evidence(
        own=metrics.estimate(m, report),
        fluency=metrics.estimate("fluency_cost_at_1", report),
        vs_caa=metrics.paired(m, report, report.get("baseline")),
        vs_prompt=metrics.paired(m, report, report.get("prompt")),
        vs_stable=metrics.paired(m, report, stable_part) if stable_part is not None and not same else None,
        stable=metrics.estimate(m, stable_part) if stable_part is not None else None,
        off_target={other: e["share"] for other, e in effects.items()},
        seed_cosine=(vec.meta.get("seeds") or {}).get("min_cosine")
        if isinstance(vec.meta.get("seeds"), dict)
        else None,
    )
    veto = history.rolled_back(behavior, model_id, method, vector_sha)
    decision = decide(
        evidence,
        rules,
        stable_version=stable.version if stable else None,
        set_changed=changed,
        stable_unjudged=stable is not None and not stable.test_sha256,
        same_as_stable=same,
        rolled_back=None
        if veto is None
        else f"v{veto.rolled_back_from} (this file) was rolled back by {veto.who} on {veto.when}: {veto.why}",
    )
    paired = {
        name: metrics.comparison_row(name, report, part)
        for name, part in (
            ("candidate − caa", report.get("baseline")),
            ("candidate − prompt", report.get("prompt")),
            ("candidate − stable", stable_part if not same else None),
        )
        if part is not None
    }
    gated: GateReport = {
        "kind": "gate",
        "format_version": GATE_FORMAT_VERSION,
        "behavior": behavior,
        "model": model_id,
        "method": method,
        **decision.to_dict(),
        "candidate": {"path": _relative(vector_file, root), "sha256": vector_sha, "summary": report["summary"]},
        "stable": None
        if stable is None
        else {
            "version": stable.version,
            "sha256": stable.sha256,
            "summary": None if stable_part is None else stable_part["summary"],
            "released": stable.when,
            "judged_on": stable.test_sha256,
        },
        "caa": (report.get("baseline") or {}).get("summary"),
        "prompt": report.get("prompt", {}).get("summary") if report.get("prompt") else None,
        "comparison": report.get("comparison"),
        "paired": paired,
        "frozen_set": {
            "path": _relative(test_file, root),
            "sha256": test_sha,
            "n_test": len(pairs),
            "stable_sha256": stable.test_sha256 if stable else None,
            "changed": changed,
        },
        "off_target": {other: e["effect"] for other, e in effects.items()},
        "dose_response": dose_response(report),
        "safe_range": safe_range(report["perplexity"], rules.max_fluency_cost),
        "evaluation": _relative(evaluation, root),
        "config": {"evaluate": to_plain(cfg), "gate": to_plain(rules)},
    }
    return Gated(gated, atomic_write_json(out, gated))
