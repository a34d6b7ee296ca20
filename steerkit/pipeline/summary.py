"""What a pipeline run says at the end: one row per behavior (its swings, transfer, composition), a
message, a markdown report and a table (the flow's Prefect artifacts), and the printed summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..eval.metrics import CI, metric
from ..layout import catalog_path, report_path
from .graph import STAGES
from .params import Params

SWING_NOTE = (
    "**Swing** = metric at the largest multiplier − at the smallest (held-out pairs); [95 % interval], "
    "bootstrapped over the pairs; **− CAA** is paired on the same pairs. "
    "**Retention** = swing on the LoRA-derived model / swing on the base. "
    "**Kept** = a behavior's swing with both vectors applied / with its own alone."
)


@dataclass
class Outcome:
    """How a run went: per stage instance (its address) its result or its error."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # address -> {outputs, seconds, status}
    failed: dict[str, str] = field(default_factory=dict)  # address -> error
    edited: list[str] = field(default_factory=list)
    up_to_date: int = 0
    committed: list[str] = field(default_factory=list)
    catalog_rebuilt: bool = False

    def status(self, address: str) -> str:
        if address in self.failed:
            return "failed"
        return self.results[address]["status"] if address in self.results else "up to date"

    def record(self, address: str, state: Any) -> None:
        """A finished task's result, or why it has none (a Prefect state, read through its public methods)."""
        if state.is_completed():
            result = state.result()
            status = "cached" if state.name == "Cached" else "skipped" if result.get("skipped") else "ran"
            self.results[address] = {**result, "status": status}
        elif not state.is_final():  # never started: a task it reads from failed
            self.failed[address] = "not run: a stage it depends on failed"
        else:
            try:
                exc = state.result(raise_on_failure=False)
            except Exception as e:
                exc = e
            self.failed[address] = f"{state.name}: {exc}" if exc is not None else state.name


class PipelineFailed(RuntimeError):
    """A stage failed (or its cached outputs were edited); nothing was committed. ``summary`` says what ran."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message, summary)  # both in args: the exception pickles whole
        self.summary = summary

    def __str__(self) -> str:
        return str(self.args[0])


def _read_json(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _gate(p: Params, name: str, history: Any, out: Outcome, started: str | None) -> dict[str, Any]:
    """The gate's decision for a behavior and its reasons; whether this run made it (or an earlier one did) and
    released it; the stable version now."""
    gate = _read_json(report_path(".", "gate", p.model.dir, name)) or {}
    key = (name, gate.get("model"), gate.get("method"))
    stable = history.stable(*key) if gate.get("model") and gate.get("method") else None
    released_now = bool(
        started
        and any(e.event == "promote" and e.when >= started for e in (history.of(*key) if stable is not None else []))
    )
    candidate = (gate.get("candidate") or {}).get("sha256")
    promoted_but_not_stable = stable is None or stable.sha256 != candidate
    return {
        "decision": gate.get("decision"),
        "decided_now": out.status(f"gate@{name}") == "ran",
        "released_now": released_now,
        # promoted against a stable release that changed before the catalog stage could release it
        "stale": gate.get("decision") == "promote" and not released_now and promoted_but_not_stable,
        "pairs_needed": gate.get("pairs_needed"),
        "reasons": gate.get("reasons") or [],
        "stable": stable.version if stable else None,
    }


def _with_ci(row: dict[str, Any], key: str, source: dict[str, Any] | None, name: str | None = None) -> None:
    """``row[key]`` and ``row[key_ci95]`` from ``source[name]`` (default: ``key``)."""
    name = name or key
    row[key], row[key + CI] = (source or {}).get(name), (source or {}).get(name + CI)


def rows(p: Params, out: Outcome, groups: tuple[str, ...] = (), started: str | None = None) -> list[dict[str, Any]]:
    """One row per selected behavior, read from its reports (missing reports give dashes, not errors).

    Every number comes with its 95 % interval (``<key>_ci95``); ``vs_caa`` is the paired difference."""
    from ..catalog.releases import History

    table, history = [], History.load(".")
    for name, b in p.selected(groups).items():
        ev = _read_json(report_path(".", "eval", p.model.dir, name)) or {}
        tr = _read_json(report_path(".", "transfer", p.model.dir, name)) if b.group is None else None
        paired = {r.get("comparison"): r for r in ev.get("paired") or []}
        row: dict[str, Any] = {"behavior": name, "layer": b.train.layer, "norm": (ev.get("vector") or {}).get("norm")}
        _with_ci(row, "margin_swing", ev.get("summary"))
        _with_ci(row, "caa_margin_swing", (ev.get("baseline") or {}).get("summary"), "margin_swing")
        _with_ci(row, "vs_caa", paired.get("vector − caa"), "margin_swing")
        _with_ci(row, "prompt_margin_swing", (ev.get("prompt") or {}).get("summary"), "margin_swing")
        _with_ci(row, "with_prompt_margin_swing", (ev.get("vector_with_prompt") or {}).get("summary"), "margin_swing")
        _with_ci(row, "win_swing", ev.get("summary"))
        _with_ci(row, "fluency_cost_at_1", ev.get("summary"))
        retained = [r for r in ((tr or {}).get("retention") or {}).values() if isinstance(r, dict)]
        _with_ci(row, "retention", retained[0] if len(retained) == 1 else None, "margin_swing")
        row["kept"] = {}
        for combo in p.combos.values():
            if name in combo.vectors:
                co = _read_json(report_path(".", "compose", p.model.dir, combo.name)) or {}
                row["kept"][combo.name] = {
                    "kept": (co.get("kept") or {}).get(name),
                    "kept" + CI: (co.get("kept_ci95") or {}).get(name),
                }
        row["gate"] = _gate(p, name, history, out, started)
        row["stages"] = {  # every per-behavior stage of the graph that runs for this behavior
            s.name: out.status(f"{s.name}@{name}")
            for s in STAGES
            if s.over == "behavior" and name in s.instances(p, groups or tuple(p.optional))
        }
        row["plot"] = report_path(".", "eval", p.model.dir, name, "png").as_posix()
        row["reports"] = {
            kind: report_path(".", kind, p.model.dir, name).as_posix() for kind in ("eval", "gate", "transfer")
        }
        table.append(row)
    return table


def message(out: Outcome, has_dvc: bool, commit: bool, seconds: float) -> str:
    """One line: what failed, or how many stages ran, came from the cache, were up to date, were committed."""
    if out.failed:
        return (
            "failed: "
            + "; ".join(f"{a} ({v.splitlines()[0][:300]})" for a, v in out.failed.items())
            + " — nothing committed to DVC, catalog unchanged"
        )
    if out.edited:
        return (
            "outputs changed since Prefect cached them: "
            + ", ".join(out.edited)
            + " — nothing committed; run again with --refresh-cache"
        )
    ran = sum(1 for r in out.results.values() if r["status"] == "ran")
    cached = sum(1 for r in out.results.values() if r["status"] == "cached")
    skipped = sum(1 for r in out.results.values() if r["status"] == "skipped")
    dvc_note = (
        f"committed {len(out.committed)} stage(s) to dvc.lock"
        if out.committed
        else "nothing to commit"
        if has_dvc and commit
        else "not committed (--no-commit)"
        if has_dvc
        else "no DVC repository: nothing committed"
    )
    skip_note = f", {skipped} skipped (inputs unchanged after their upstream ran)" if skipped else ""
    return (
        f"done in {seconds:.0f} s: {ran} stage(s) ran, {cached} cached{skip_note}, {out.up_to_date} up to date; "
        f"{dvc_note}"
    )


def summarize(
    p: Params,
    out: Outcome,
    has_dvc: bool,
    commit: bool,
    seconds: float,
    root: str | Path,
    groups: tuple[str, ...] = (),
    started: str | None = None,
) -> dict[str, Any]:
    """The run's summary (JSON-able): ``ok``, ``message``, the rows and where the plots and catalog are.

    ``started``: when the run began (ISO, UTC): releases after it are this run's."""
    catalog = catalog_path(".")
    return {
        "ok": not out.failed and not out.edited,
        "message": message(out, has_dvc, commit, seconds),
        "rows": rows(p, out, groups, started),
        "failed": dict(out.failed),
        "edited": list(out.edited),
        "committed": list(out.committed),
        "catalog": str(catalog) if catalog.exists() else None,
        "catalog_rebuilt": out.catalog_rebuilt,
        "seconds": round(seconds, 1),
        "placement": placement(out),
        "model": p.model.spec,
        "root": str(root),
        "compose": {c: report_path(".", "compose", p.model.dir, c, "png").as_posix() for c in p.combos},
        "transfer": {b: report_path(".", "transfer", p.model.dir, b, "png").as_posix() for b in p.behaviors},
    }


def placement(out: Outcome) -> dict[str, dict[str, Any]]:
    """Where, how and when each stage that ran this time ran: device, Dask worker, its process forked or executed
    (``steerkit.pipeline.launch``), start and end (epoch seconds)."""
    keys = ("device", "worker", "process", "started", "ended")
    return {a: {k: r.get(k) for k in keys} for a, r in out.results.items() if r["status"] == "ran" and "device" in r}


def placement_lines(summary: dict[str, Any]) -> list[str]:
    """One line per stage that ran: where (device, Dask worker) and when, in seconds from the run's first start."""
    placed = summary.get("placement") or {}
    if not placed:
        return []
    t0 = min(p["started"] for p in placed.values())
    width = max(len(a) for a in placed)
    return [
        f"ran       {a:<{width}}  {p['device']:<7} {p['worker'] or 'flow':<8} {p.get('process') or '':<8} "
        f"{p['started'] - t0:6.0f} s → {p['ended'] - t0:6.0f} s"
        for a, p in sorted(placed.items(), key=lambda kv: kv[1]["started"])
    ]


def failed_summary(message_: str) -> dict[str, Any]:
    """The summary of a run that failed before any stage ran."""
    return {
        "ok": False,
        "message": message_,
        "rows": [],
        "failed": {},
        "edited": [],
        "committed": [],
        "catalog": None,
        "catalog_rebuilt": False,
        "compose": {},
        "transfer": {},
    }


def _num(x: Any, fmt: str = "{:+.2f}") -> str:
    return "—" if not isinstance(x, (int, float)) or isinstance(x, bool) else fmt.format(x)


#: the summary table's columns: heading, row key, the metric that shows it (its format, its interval)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("margin swing (BiPO)", "margin_swing", "margin_swing"),
    ("− CAA at its norm, paired", "vs_caa", "margin_swing"),
    ("prompt (toward − away)", "prompt_margin_swing", "margin_swing"),
    ("BiPO + prompt", "with_prompt_margin_swing", "margin_swing"),
    ("win swing", "win_swing", "win_swing"),
    ("fluency cost (m=±1)", "fluency_cost_at_1", "fluency_cost_at_1"),
    ("transfer retention", "retention", "retention"),
)


def _cell(row: dict[str, Any], key: str, name: str) -> str:
    return metric(name).show(row.get(key), row.get(key + CI))


def _kept(row: dict[str, Any], sep: str) -> str:
    return sep.join(f"{c}: {metric('kept').show(k['kept'], k['kept' + CI])}" for c, k in row["kept"].items()) or "—"


def table_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The rows as a person reads them (the flow's table artifact), 95 % intervals in brackets."""
    return [
        {
            "behavior": r["behavior"],
            "layer": str(r["layer"]),
            "norm": _num(r["norm"], "{:.2f}"),
            **{head: _cell(r, key, name) for head, key, name in COLUMNS},
            "kept when composed": _kept(r, ", "),
            "stages": ", ".join(f"{k} {v}" for k, v in r["stages"].items()),
        }
        for r in summary["rows"]
    ]


def decision_text(gate: dict[str, Any]) -> str:
    """What the gate decided, and whether in this run: ``promote → released v2``, ``inconclusive (≈90 pairs)``,
    ``hold (earlier decision, not re-run)``."""
    d = gate.get("decision")
    if not d:
        return "—"
    text = d
    if d == "inconclusive" and gate.get("pairs_needed"):
        text += f" (about {gate['pairs_needed']} held-out pairs would tell)"
    if gate.get("released_now"):
        text += f" → released v{gate.get('stable')}"
    if not gate.get("decided_now"):
        text += " (an earlier run's decision: nothing re-decided)"
    return text


def gate_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The gate's decision per behavior (this run's or an earlier one's), the stable version now and why."""
    return [
        {
            "behavior": r["behavior"],
            "gate": decision_text(r["gate"]),
            "stable": "—" if r["gate"]["stable"] is None else f"v{r['gate']['stable']}",
            "why": "; ".join(r["gate"]["reasons"]) or "—",
        }
        for r in summary["rows"]
    ]


def _md_table(table: list[dict[str, str]]) -> str:
    if not table:
        return ""
    head = "| " + " | ".join(table[0]) + " |\n|" + "---|" * len(table[0]) + "\n"
    return head + "".join("| " + " | ".join(str(v).replace("|", "\\|") for v in row.values()) + " |\n" for row in table)


def markdown(summary: dict[str, Any]) -> str:
    """The run's report as markdown (the flow's markdown artifact)."""
    plots = "\n".join(
        f"- {r['behavior']}: `{r['plot']}`; reports " + ", ".join(f"`{v}`" for v in r.get("reports", {}).values())
        for r in summary["rows"]
    )
    return (
        f"# steerkit pipeline — {'succeeded' if summary['ok'] else 'FAILED'}\n\n"
        f"Model `{summary['model']}`, project `{summary.get('root', '.')}`.\n\n{summary['message']}\n\n"
        f"{_md_table(table_rows(summary))}\n{SWING_NOTE}\n\n## Release gate\n\n{_md_table(gate_rows(summary))}\n"
        f"Plots and reports:\n{plots}\n\nCatalog: `{summary['catalog'] or '(none)'}`"
        + (" (rebuilt)" if summary["catalog_rebuilt"] else "")
        + "\n"
    )


def print_summary(summary: dict[str, Any], console: Any) -> None:
    """The run's summary table and where its plots and catalog are."""
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal:  # a log file, CI or a scheduled run: rich would cut the table at 80 columns
        console = Console(file=console.file, width=max(console.width, 170))
    table = Table(
        "behavior",
        "layer",
        "|v|",
        *(head for head, _, _ in COLUMNS),
        "kept composed",
        title=f"steerkit pipeline on {summary.get('model', '?')} (swings: m = min → max; 95 % intervals)",
    )
    for r in summary["rows"]:
        table.add_row(
            r["behavior"],
            str(r["layer"]),
            _num(r["norm"], "{:.2f}"),
            *(_cell(r, key, name) for _, key, name in COLUMNS),
            _kept(r, "\n"),
        )
    if summary["rows"]:
        console.print(table)
        gates = Table(
            "behavior", "gate", "stable", "why", title="release gate (promote / hold / inconclusive, and why)"
        )
        for g in gate_rows(summary):
            gates.add_row(*g.values())
        console.print(gates)
    for line in placement_lines(summary):
        console.print(line, highlight=False, soft_wrap=True)
    for r in summary["rows"]:
        console.print(f"plot      {r['plot']}", highlight=False, soft_wrap=True)
    for path in summary.get("transfer", {}).values():
        console.print(f"transfer  {path}", highlight=False, soft_wrap=True)
    for path in summary.get("compose", {}).values():
        console.print(f"compose   {path}", highlight=False, soft_wrap=True)
    console.print(f"catalog   {summary.get('catalog') or '(not built)'}", highlight=False, soft_wrap=True)
    style = "green" if summary["ok"] else "bold red"
    console.print(f"[{style}]{summary['message']}[/]", highlight=False, soft_wrap=True)
