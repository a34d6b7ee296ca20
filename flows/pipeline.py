"""The steerkit pipeline as one Prefect flow: the stages of ``dvc.yaml`` as tasks, then ``dvc commit``.

Each task runs the command ``dvc.yaml`` runs for that stage — ``steerkit pipeline stage STAGE NAME``,
in its own process, which runs the plain ``steerkit`` command lines params.yaml makes for it — so
the flow holds no logic of its own:

* **what runs**: the stages DVC reports changed (``dvc status``) and everything downstream of
  them, so after ``dvc repro`` the flow has nothing to do (``--force`` runs everything);
* **parallel**: prepare → train → evaluate → transfer are mapped over the behaviors
  (``.map`` with ``unmapped`` constants), each behavior's chain moving on as soon as its own
  upstream task finished; compose maps over the combinations, then the catalog;
* **retries** (``retries``, default 1) and **caching**: ``cache_policy=INPUTS + TASK_SOURCE`` (less
  the ``threads`` speed knob) with ``persist_result=True``; the inputs are the stage's command
  lines (its parameters), the sha256 of every input file and the upstream tasks' output hashes,
  so a behavior whose data and parameters did not change is not
  retrained after a failed run; a task whose outputs are missing ignores its cached result, and
  cached outputs edited since are refused before anything is committed;
* **artifacts**: a markdown report and a table (behavior, layer, swings, retention, interference);
* **DVC**: only when every task succeeded, ``dvc commit -f`` of the stages that ran, so
  ``dvc.lock`` records what the flow made and ``dvc repro`` then finds nothing to do. The
  catalog is built after that commit (it records the DVC versions of the data) and committed
  on its own. A failed run commits nothing, keeps the catalog and the failed stages' previous
  outputs (the train stage moves its folder into place only when all its commands succeeded).

Run it with ``steerkit pipeline run`` (``make run``); serve it on its schedule with
``steerkit pipeline serve`` (``make serve``), deployment settings in ``prefect.yaml``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steerkit import cli_pipeline as cp
from steerkit.fileio import sha256_file
from steerkit.params import Params, load_params

cp.offline_env(Path(__file__).resolve().parents[1])  # before prefect reads its settings (when it is first here)

from prefect import flow, get_run_logger, task, unmapped  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import INPUTS, TASK_SOURCE  # noqa: E402
from prefect.futures import wait  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

FLOW_NAME = "steerkit-pipeline"
ARTIFACT_KEY = "steerkit-pipeline"
_DVC_LOCK = threading.Lock()  # one DVC repository object at a time in this process


@contextmanager
def _quiet_dvc():
    """DVC's INFO lines ("Updating lock file") would repeat once per stage in the run's log."""
    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class PipelineFailed(RuntimeError):
    """Some stage failed (or its cached outputs were edited); nothing was committed. ``summary`` says what ran."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message, summary)
        self.summary = summary

    def __str__(self) -> str:
        return str(self.args[0])


# ------------------------------------------------------------------------------------- hashing
def hash_path(path: str | Path) -> str | None:
    """sha256 of a file, or of a folder's sorted (relative path, file sha256) list; None if missing."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{hash_path(f)}\n".encode())
        return h.hexdigest()
    return None


def hash_outputs(paths: list[str]) -> dict[str, str | None]:
    return {p: hash_path(p) for p in paths}


# -------------------------------------------------------------------------------------- DVC glue
def address(stage: str, name: str | None) -> str:
    return f"{stage}@{name}" if name else stage


def dvc_stale(root: Path) -> tuple[set[str], set[str]] | None:
    """(stages DVC would run, all stages in dvc.yaml) — changed ones plus everything downstream; None without DVC."""
    try:
        import networkx as nx
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo
    except ImportError:  # pragma: no cover - dvc is a dependency
        return None
    with _DVC_LOCK, _quiet_dvc():
        try:
            repo = Repo(str(root))
        except NotDvcRepoError:
            return None
        with repo:
            graph = repo.index.graph
            changed = set(repo.status())
            stale: set[str] = set()
            for stage in graph.nodes:
                if stage.addressing in changed:
                    stale |= {stage.addressing} | {s.addressing for s in nx.ancestors(graph, stage)}
            known = {s.addressing for s in graph.nodes}
    return stale, known


def dvc_commit(root: Path, targets: list[str]) -> None:
    """``dvc commit -f`` of ``targets``: record what is on disk as those stages' outputs in dvc.lock."""
    from dvc.repo import Repo

    with _DVC_LOCK, _quiet_dvc(), Repo(str(root)) as repo:
        for t in targets:
            repo.commit(t, force=True)


# ---------------------------------------------------------------------------------------- tasks
def stage_argv(stage: str, name: str | None, params: str) -> list[str]:
    """The command dvc.yaml runs for this stage (`steerkit pipeline stage ...`), for this Python."""
    return [sys.executable, "-m", "steerkit.cli", "pipeline", "stage", stage, *([name] if name else []),
            "--params", params]


def run_stage_process(stage: str, name: str | None, root: str, params: str, threads: int | None,
                      log: Any) -> None:
    """Run one stage in its own process (as `dvc repro` does), its output going to ``log`` line by line.

    A process per stage keeps stages that run at the same time apart (model loading, RNG seeds,
    torch threads); the stage's commands run inside it, in order.
    """
    env = dict(os.environ)
    env.setdefault("COLUMNS", "200")  # command lines and tables on one log line each
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    argv = stage_argv(stage, name, params)
    t0 = time.perf_counter()
    tail: list[str] = []
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", errors="replace", bufsize=1)
    beat = threading.Event()

    def heartbeat() -> None:  # a line every 30 s while a long stage (training) prints nothing
        while not beat.wait(30):
            log.info("… %s running for %.0f s", address(stage, name), time.perf_counter() - t0)

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    log.info("%s | %s", address(stage, name), part.rstrip())
                    tail = (tail + [part.rstrip()])[-15:]
        code = proc.wait()
    finally:
        beat.set()
        if proc.poll() is None:
            proc.kill()
    if code != 0:
        raise cp.StageError(f"stage {address(stage, name)} failed (exit status {code}): "
                            + " / ".join(x.strip() for x in tail if x.strip())[-1500:],
                            fix=f"run `{' '.join(['steerkit', *stage_argv(stage, name, params)[3:]])}` "
                                "in the project root to see it alone")


def _enter(root: str) -> None:
    if Path.cwd() != Path(root):
        os.chdir(root)  # paths in params.yaml and the outputs are relative to the project root


@task(name="stage", task_run_name="{stage}[{name}]", retries=1, retry_delay_seconds=5,
      cache_policy=(INPUTS - "threads") + TASK_SOURCE, persist_result=True)
def stage_task(stage: str, name: str | None, root: str, params: str, commands: list[list[str]],
               inputs: dict[str, str | None], upstream: Any = None, threads: int | None = None) -> dict[str, Any]:
    """One stage for one behavior (combination, or none): `steerkit pipeline stage ...`, then its output hashes.

    ``commands`` (the command lines params.yaml makes for it), ``inputs`` (input file hashes) and
    ``upstream`` (the results, with output hashes, of the tasks that made its other inputs) make
    the cache key.
    """
    _enter(root)
    log = get_run_logger()
    log.info("▶ %s", address(stage, name))
    t0 = time.perf_counter()
    run_stage_process(stage, name, root, params, threads, log)
    p = load_params(params)
    res = {"stage": stage, "name": name, "outputs": hash_outputs(cp.stage_outputs(p, stage, name)),
           "seconds": round(time.perf_counter() - t0, 1)}
    missing = [o for o, h in res["outputs"].items() if h is None]
    if missing:
        raise cp.StageError(f"stage {address(stage, name)} did not write {', '.join(missing)}")
    log.info("✓ %s in %.0f s", address(stage, name), res["seconds"])
    return res


# ----------------------------------------------------------------------------------------- flow
def _upstream(stage: str, name: str | None, p: Params) -> list[tuple[str, str | None]]:
    """The (stage, name) tasks whose outputs this stage reads (mirrors dvc.yaml's deps)."""
    if stage == "train":
        return [("prepare", name)]
    if stage == "evaluate":
        return [("train", name), ("prepare", name)]
    if stage == "transfer":
        return [("train", name), ("prepare", name), ("derive", None)]
    if stage == "compose":
        vecs = p.compose.combos[name].vectors
        return [(s, v) for v in vecs for s in ("train", "prepare")]
    return []


def _static_inputs(stage: str, name: str | None, p: Params) -> list[str]:
    """Input files that no stage makes (mirrors dvc.yaml's deps)."""
    if stage == "prepare":
        b = p.behavior(name)
        return [b.data.train, b.data.test]
    if stage in ("evaluate", "transfer", "compose"):
        return [p.evaluate.texts]
    if stage == "derive":
        return [p.derive.data, p.evaluate.texts]
    return []


@flow(name=FLOW_NAME, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def pipeline(root: str = ".", params: str = "params.yaml", groups: list[str] | None = None, commit: bool = True,
             retries: int = 1, retry_delay_seconds: float = 5.0, refresh_cache: bool = False,
             force: bool = False, threads: int | None = None) -> dict[str, Any]:
    """params.yaml → pairs → vectors → evaluation → transfer → composition → catalog, then ``dvc commit``."""
    log = get_run_logger()
    t0 = time.perf_counter()
    if threads is None:  # two stages at a time by default (the decorator's runner): half the cores each
        threads = max(1, (os.cpu_count() or 1) // 2)
    root_path = Path(root).resolve()
    _enter(str(root_path))
    groups = list(groups or [])
    p = load_params(params)
    dvc = dvc_stale(root_path)
    stale, known = dvc if dvc is not None else (set(), set())

    def needed(stage: str, name: str | None) -> bool:
        a = address(stage, name)
        return force or dvc is None or a not in known or a in stale

    # derive needs nothing: first, so it runs beside prepare instead of holding up transfer later
    order = ["derive"] + [s for s in cp.STAGES if s not in ("derive", "catalog")]
    plan = {(s, n): needed(s, n) for s in order for n in cp.stage_names(p, s, tuple(groups))}
    for s in order:
        for n in cp.stage_names(p, s, tuple(groups)):
            if not plan[(s, n)] and any(plan.get(u) for u in _upstream(s, n, p)):
                plan[(s, n)] = True  # downstream of something that runs (DVC already says so for its stages)
    log.info("plan: %s", ", ".join(f"{address(s, n)}={'run' if r else 'up to date'}" for (s, n), r in plan.items()))
    foreign = sorted(stale - {address(s, n) for s, n in plan} - {"catalog"})
    if foreign:
        log.warning("dvc.yaml stages this flow does not run are out of date (run `dvc repro` for them): %s",
                    ", ".join(foreign))

    futures: dict[tuple[str, str | None], Any] = {}
    base = stage_task.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    for s in order:
        todo = [n for n in cp.stage_names(p, s, tuple(groups)) if plan[(s, n)]]
        for refresh in (False, True):
            names = [n for n in todo
                     if (refresh_cache or any(h is None for h in hash_outputs(cp.stage_outputs(p, s, n)).values())) == refresh]
            if not names:
                continue
            ups, static = [], []
            for n in names:
                ups.append([futures[u] for u in _upstream(s, n, p) if u in futures])
                inputs = _static_inputs(s, n, p)
                inputs += [o for u in _upstream(s, n, p) if u not in futures for o in cp.stage_outputs(p, *u)]
                static.append(hash_outputs(inputs))
            mapped = base.with_options(refresh_cache=True) if refresh else base
            fs = mapped.map(stage=unmapped(s), name=names, root=unmapped(str(root_path)), params=unmapped(params),
                            commands=[cp.stage_commands(p, s, n, tuple(groups)) for n in names],
                            inputs=static, upstream=ups, threads=unmapped(threads))
            futures.update({(s, n): f for n, f in zip(names, fs)})
    wait(list(futures.values()))

    results, failed = _collect(futures)
    edited = _edited_outputs(results)
    committed: list[str] = []
    catalog_ran = False
    if not failed and not edited:
        ran = [address(s, n) for (s, n) in results if address(s, n) in known]
        if commit and dvc is not None and ran:
            dvc_commit(root_path, ran)
            committed += ran
        if force or dvc is None or "catalog" in stale or any(plan.values()) or not Path("vectors/catalog.json").exists():
            cat = base.with_options(refresh_cache=True)
            inputs = hash_outputs([f"vectors/{p.model.dir}", f"reports/eval/{p.model.dir}"])
            state = cat(stage="catalog", name=None, root=str(root_path), params=params,
                        commands=cp.stage_commands(p, "catalog"), inputs=inputs, threads=threads, return_state=True)
            res, fail = _collect({("catalog", None): state})
            results.update(res)
            failed.update(fail)
            catalog_ran = not fail
            if catalog_ran and commit and dvc is not None and "catalog" in known:
                dvc_commit(root_path, ["catalog"])
                committed.append("catalog")
    summary = _summary(p, root_path, plan, results, failed, edited, committed, catalog_ran, dvc is not None,
                       commit, groups, time.perf_counter() - t0)
    _artifacts(summary)
    if failed or edited:
        raise PipelineFailed(summary["message"], summary)
    log.info(summary["message"])
    return summary


def _collect(futures: dict) -> tuple[dict, dict]:
    """Results of the finished tasks and errors of the failed ones, keyed by (stage, name)."""
    results, failed = {}, {}
    for key, f in futures.items():
        state = f if not hasattr(f, "state") else f.state
        if state.is_completed():
            res = dict(state.result())
            res["status"] = "cached" if state.name == "Cached" else "ran"
            results[key] = res
        elif not state.is_final():  # never started: a task it reads from failed
            failed[key] = "not run: a stage it depends on failed"
        else:
            try:
                exc = state.result(raise_on_failure=False)
            except Exception as e:  # noqa: BLE001 - a state with no stored result
                exc = e
            failed[key] = f"{state.name}: {exc}" if exc is not None else state.name
    return results, failed


def _edited_outputs(results: dict) -> list[str]:
    """Outputs that differ from what their (possibly cached) task made: never commit those."""
    out = []
    for (s, n), res in results.items():
        for path, sha in res["outputs"].items():
            if hash_path(path) != sha:
                out.append(f"{address(s, n)}: {path}")
    return out


# --------------------------------------------------------------------------------------- report
def _read_json(path: str | Path) -> dict | None:
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _num(x: Any, fmt: str = "{:+.2f}") -> str:
    return "—" if not isinstance(x, (int, float)) or isinstance(x, bool) else fmt.format(x)


def _summary(p: Params, root: Path, plan: dict, results: dict, failed: dict, edited: list, committed: list,
             catalog_ran: bool, has_dvc: bool, commit: bool, groups: list, seconds: float) -> dict[str, Any]:
    rows = []
    for name, b in p.selected(groups).items():
        ev = _read_json(cp.report_file(p, "eval", name)) or {}
        tr = _read_json(cp.report_file(p, "transfer", name)) if b.group is None else None
        s, base = ev.get("summary") or {}, (ev.get("baseline") or {}).get("summary") or {}
        retention = None
        if tr and tr.get("retention"):
            vals = [r.get("margin_swing") for r in tr["retention"].values() if isinstance(r, dict)]
            retention = vals[0] if len(vals) == 1 else None
        kept = {}
        for combo in p.compose.combos.values():
            if name in combo.vectors:
                co = _read_json(cp.report_file(p, "compose", combo.name)) or {}
                kept[combo.name] = (co.get("kept") or {}).get(name)
        status = {st: ("failed" if (st, name) in failed else results[(st, name)]["status"] if (st, name) in results
                       else "up to date") for st in ("prepare", "train", "evaluate", "transfer")
                  if (st, name) in plan}
        rows.append({"behavior": name, "layer": b.train.layer, "norm": (ev.get("vector") or {}).get("norm"),
                     "margin_swing": s.get("margin_swing"), "caa_margin_swing": base.get("margin_swing"),
                     "win_swing": s.get("win_swing"), "fluency_cost_at_1": s.get("fluency_cost_at_1"),
                     "retention": retention, "kept": kept, "stages": status,
                     "plot": cp.report_file(p, "eval", name, "png")})
    catalog = Path("vectors/catalog.json")
    ok = not failed and not edited
    if failed:
        message = ("failed: " + "; ".join(f"{address(*k)} ({v.splitlines()[0][:300]})" for k, v in failed.items())
                   + " — nothing committed to DVC, catalog unchanged")
    elif edited:
        message = ("outputs changed since Prefect cached them: " + ", ".join(edited)
                   + " — nothing committed; run again with --refresh-cache")
    else:
        ran = sum(1 for r in results.values() if r["status"] == "ran")
        cached = sum(1 for r in results.values() if r["status"] == "cached")
        dvc_note = (f"committed {len(committed)} stage(s) to dvc.lock" if committed else
                    "nothing to commit" if has_dvc and commit else
                    "not committed (--no-commit)" if has_dvc else "no DVC repository: nothing committed")
        message = f"done in {seconds:.0f} s: {ran} stage(s) ran, {cached} cached, " \
                  f"{sum(1 for r in plan.values() if not r)} up to date; {dvc_note}"
    return {"ok": ok, "message": message, "rows": rows, "failed": {address(*k): v for k, v in failed.items()},
            "edited": edited, "committed": committed, "catalog": str(catalog) if catalog.exists() else None,
            "catalog_rebuilt": catalog_ran, "seconds": round(seconds, 1), "model": p.model.spec, "root": str(root),
            "compose": {c: cp.report_file(p, "compose", c, "png") for c in p.compose.combos},
            "transfer": {b: cp.report_file(p, "transfer", b, "png") for b in p.behaviors}}


def _artifacts(summary: dict[str, Any]) -> None:
    table = [{"behavior": r["behavior"], "layer": r["layer"], "norm": _num(r["norm"], "{:.2f}"),
              "margin swing (BiPO)": _num(r["margin_swing"]), "margin swing (CAA, same norm)": _num(r["caa_margin_swing"]),
              "win swing": _num(r["win_swing"]), "fluency cost (m=±1)": _num(r["fluency_cost_at_1"], "{:.1%}"),
              "transfer retention": _num(r["retention"], "{:.2f}"),
              "kept when composed": ", ".join(f"{c}: {_num(v, '{:.2f}')}" for c, v in r["kept"].items()) or "—",
              "stages": ", ".join(f"{k} {v}" for k, v in r["stages"].items())} for r in summary["rows"]]
    create_table_artifact(table=table, key=ARTIFACT_KEY + "-table",
                          description=f"steerkit pipeline on {summary['model']}: {summary['message']}")
    head = "| " + " | ".join(table[0]) + " |\n|" + "---|" * len(table[0]) + "\n" if table else ""
    body = "".join("| " + " | ".join(str(v).replace("|", "\\|") for v in row.values()) + " |\n" for row in table)
    plots = "\n".join(f"- `{r['plot']}`" for r in summary["rows"])
    md = (f"# steerkit pipeline — {'succeeded' if summary['ok'] else 'FAILED'}\n\n"
          f"Model `{summary['model']}`, project `{summary['root']}`.\n\n{summary['message']}\n\n{head}{body}\n"
          f"**Swing** = metric at the largest multiplier − at the smallest (held-out pairs). "
          f"**Retention** = swing on the LoRA-derived model / swing on the base. "
          f"**Kept** = a behavior's swing with both vectors applied / with its own alone.\n\n"
          f"Plots:\n{plots}\n\nCatalog: `{summary['catalog'] or '(none)'}`"
          + (" (rebuilt)" if summary["catalog_rebuilt"] else "") + "\n")
    create_markdown_artifact(markdown=md, key=ARTIFACT_KEY + "-report", description="steerkit pipeline summary")


# ------------------------------------------------------------------------------------ front door
def task_runner(runner: str = "threads", workers: int = 2, dask_address: str | None = None) -> Any:
    """threads (default), or Dask: a local cluster of ``workers`` (threads in this process), or ``dask_address``."""
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            from steerkit.errors import SteerkitError

            raise SteerkitError("the Dask runner needs the prefect-dask package", fix="pip install prefect-dask") from None
        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # Threads in one process share this process's Prefect API; worker processes would each start their own.
        return DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": workers, "processes": False,
                                              "dashboard_address": None})
    from steerkit.errors import SteerkitError

    raise SteerkitError(f"unknown task runner {runner!r}", fix="use threads or dask")


def run_pipeline(root: str = ".", params: str = "params.yaml", runner: str = "threads", workers: int = 2,
                 dask_address: str | None = None, groups: list[str] | None = None, commit: bool = True,
                 retries: int = 1, retry_delay_seconds: float = 5.0, refresh_cache: bool = False,
                 force: bool = False) -> dict[str, Any]:
    """Run the flow on the chosen task runner; returns the summary (``ok`` False when a stage failed)."""
    load_params(Path(root) / params if not Path(params).is_absolute() else params, root=root)  # fail before Prefect starts
    threads = 0 if dask_address else max(1, (os.cpu_count() or 1) // max(1, workers))  # the tasks share the cores
    f = pipeline.with_options(task_runner=task_runner(runner, workers, dask_address))
    state = f(root=root, params=params, groups=list(groups or []), commit=commit, retries=retries,
              retry_delay_seconds=retry_delay_seconds, refresh_cache=refresh_cache, force=force, threads=threads,
              return_state=True)
    if state.is_completed():
        return state.result()
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, PipelineFailed):
        return exc.summary
    return {"ok": False, "message": f"the flow failed: {exc}", "rows": [], "failed": {}, "edited": [],
            "committed": [], "catalog": None, "catalog_rebuilt": False, "compose": {}, "transfer": {}}


def print_summary(summary: dict[str, Any], console: Any) -> None:
    """The run's summary table and where its plots and catalog are."""
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal:  # a log file, CI or a scheduled run: rich would cut the table at 80 columns
        console = Console(file=console.file, width=max(console.width, 170))
    rows = summary["rows"]
    caa = any(r["caa_margin_swing"] is not None for r in rows)
    table = Table("behavior", "layer", "|v|", "margin swing", *(["CAA, same |v|"] if caa else []), "win swing",
                  "fluency cost m=±1", "transfer retention", "kept composed",
                  title=f"steerkit pipeline on {summary.get('model', '?')} (swings: m = min → max)")
    for r in rows:
        table.add_row(r["behavior"], str(r["layer"]), _num(r["norm"], "{:.2f}"), _num(r["margin_swing"]),
                      *([_num(r["caa_margin_swing"])] if caa else []), _num(r["win_swing"]),
                      _num(r["fluency_cost_at_1"], "{:.1%}"), _num(r["retention"], "{:.2f}"),
                      "\n".join(f"{c}: {_num(v, '{:.2f}')}" for c, v in r["kept"].items()) or "—")
    if rows:
        console.print(table)
    for r in rows:
        console.print(f"plot      {r['plot']}", highlight=False, soft_wrap=True)
    for b, path in summary.get("transfer", {}).items():
        console.print(f"transfer  {path}", highlight=False, soft_wrap=True)
    for c, path in summary.get("compose", {}).items():
        console.print(f"compose   {path}", highlight=False, soft_wrap=True)
    console.print(f"catalog   {summary.get('catalog') or '(not built)'}", highlight=False, soft_wrap=True)
    style = "green" if summary["ok"] else "bold red"
    console.print(f"[{style}]{summary['message']}[/]", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------- deployment
def deployment_settings(root: str | Path = ".") -> dict[str, Any]:
    """The first deployment of ``prefect.yaml`` (name, cron, parameters)."""
    import yaml

    cfg = yaml.safe_load((Path(root) / "prefect.yaml").read_text(encoding="utf-8"))
    dep = cfg["deployments"][0]
    crons = [s["cron"] for s in dep.get("schedules") or [] if s.get("cron")]
    return {"name": dep["name"], "cron": crons[0] if crons else None, "parameters": dep.get("parameters") or {},
            "timezone": next((s.get("timezone") for s in dep.get("schedules") or [] if s.get("timezone")), None),
            "tags": dep.get("tags") or [], "description": dep.get("description")}


def deployment(root: str | Path = ".", cron: str | None = None, name: str | None = None) -> Any:
    """The pipeline's runner deployment on its cron schedule (nothing is registered until ``apply``/serve)."""
    from prefect.schedules import Cron

    s = deployment_settings(root)
    params = {**s["parameters"], "root": str(Path(root).resolve())}
    sched = Cron(cron or s["cron"], timezone=s["timezone"]) if s["timezone"] else Cron(cron or s["cron"])
    return pipeline.to_deployment(name=name or s["name"], schedule=sched, parameters=params, tags=s["tags"],
                                  description=s["description"])


def serve(root: str | Path = ".", cron: str | None = None, name: str | None = None) -> None:
    """Register the deployment and run its scheduled flow runs in this process until stopped."""
    from prefect import serve as prefect_serve

    prefect_serve(deployment(root, cron, name))


if __name__ == "__main__":  # python flows/pipeline.py: one run with the defaults
    import sys

    from rich.console import Console

    out = run_pipeline()
    print_summary(out, Console())
    sys.exit(0 if out["ok"] else 1)
