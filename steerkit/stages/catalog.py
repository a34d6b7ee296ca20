"""The catalog stage: release what the gate passed, then scan the project's vectors → ``vectors/catalog.json``.

Releasing reads the gate reports (``reports/gate/<model>/<behavior>.json``): a candidate the gate
promoted becomes the next stable version (``steerkit.catalog.releases.promote``), a held or
inconclusive one stays a candidate with its reasons. Nothing is released on a stale decision: a
report about another file than the one now in ``vectors/`` (retrained after its gate ran), or one
whose stable release changed after the gate compared against it (a rollback in between), releases
nothing and says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..catalog.build import rebuild_catalog
from ..catalog.index import Catalog
from ..catalog.provenance import dvc_version, git_head, read_dvc_lock, relpath_in
from ..catalog.releases import History, StaleDecisionError, promote
from ..errors import DataError
from ..fileio import sha256_bytes
from ..layout import report_path

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What releasing did with one gate report."""

    behavior: str
    model: str
    method: str
    decision: str  # the gate's: promote | hold | inconclusive | unchanged; or stale (not acted on)
    released: bool
    version: int | None  # the stable version now (None: nothing released yet)
    reasons: list[str]


def release(root: str | Path, gate_reports: list[Path]) -> list[Outcome]:
    """Promote the candidates the gate passed; every report gets an outcome (the flow's summary table)."""
    root = Path(root)
    lock, rev, out = read_dvc_lock(root), git_head(root), []
    for path in gate_reports:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            behavior, model, method = report["behavior"], report["model"], report["method"]
            candidate, decision = report["candidate"], report["decision"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"not a readable gate report ({exc})", where=str(path), fix="re-run the gate stage for it"
            ) from None
        reasons = list(report.get("reasons") or [])
        source = Path(candidate["path"])
        data = (root / source).read_bytes() if (root / source).is_file() else None
        released = False
        if data is None or sha256_bytes(data) != candidate["sha256"]:
            reasons = [f"{source} is not the file the gate judged (retrained since?): re-run the gate"]
            decision = "stale"
        elif decision == "promote":
            stable = History.load(root).stable(behavior, model, method)
            judged = report.get("stable")
            expect = None if not judged else (judged["version"], judged["sha256"])
            if stable is None or stable.sha256 != candidate["sha256"]:
                try:
                    _release(root, report, path, data, source, reasons, rev, lock, expect)
                    released = True
                except StaleDecisionError as exc:
                    decision, reasons = "stale", [exc.what]
        stable = History.load(root).stable(behavior, model, method)
        out.append(Outcome(behavior, model, method, decision, released, stable.version if stable else None, reasons))
        log.info("%s (%s): %s%s", behavior, model, decision, " → released" if released else "")
    return out


def _release(
    root: Path,
    report: dict,
    path: Path,
    data: bytes,
    source: Path,
    reasons: list[str],
    rev: str | None,
    lock: dict,
    expect: tuple[int, str] | None,
) -> None:
    """Promote a gate report's candidate, if stable is still what the gate compared against."""
    behavior, model, method, candidate = report["behavior"], report["model"], report["method"], report["candidate"]
    promote(
        root,
        behavior,
        model,
        method,
        data,
        source=source.as_posix(),
        why="release gate: " + "; ".join(reasons),
        metrics={
            "summary": candidate.get("summary") or {},
            "off_target": report.get("off_target") or {},
            "dose_response": report.get("dose_response"),
            "safe_range": report.get("safe_range"),
            "gate": {"report": path.as_posix(), "checks": report.get("checks")},
        },
        test_sha256=(report.get("frozen_set") or {}).get("sha256"),
        git_rev=rev,
        dvc_md5=dvc_version(lock, relpath_in(source.as_posix(), root)),
        expect_stable=expect,
    )


def judged_by_gate(root: str | Path, model_dir: str, behavior: str, sha256: str) -> dict | None:
    """The gate report that judged this very vector file (by sha256), or None."""
    try:
        report = json.loads(report_path(root, "gate", model_dir, behavior).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    candidate = report.get("candidate") if isinstance(report, dict) else None
    return report if isinstance(candidate, dict) and candidate.get("sha256") == sha256 else None


@dataclass
class Built:
    """The rebuilt catalog and what releasing did, per gate report."""

    catalog: Catalog
    outcomes: list[Outcome]


def catalog(root: str | Path = ".", gates: str | Path | None = None) -> Built:
    """Release what the gate reports in the folder ``gates`` (relative to ``root``) passed; rebuild the catalog."""
    outcomes = []
    if gates is not None:
        folder = Path(root) / gates
        if not folder.is_dir():
            raise DataError(
                "no such folder of gate reports", where=str(folder), fix="run the gate first (`steerkit gate`)"
            )
        outcomes = release(root, sorted(folder.glob("*.json")))
    return Built(rebuild_catalog(root), outcomes)
