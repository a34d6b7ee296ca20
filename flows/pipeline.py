"""The steerkit pipeline as one Prefect flow: the stage graph of params.yaml as tasks, then ``dvc commit``.

Each task runs what ``dvc.yaml`` runs (``steerkit pipeline stage STAGE NAME``, in its own process); the
plan, the cache keys and the summary come from ``steerkit.pipeline``. Only when every task succeeded are
the stages that ran committed to dvc.lock, then the catalog is built and committed. ``steerkit pipeline
run`` (``make run``) runs it; ``steerkit pipeline serve`` serves it on the schedule of ``prefect.yaml``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steerkit.errors import SteerkitError
from steerkit.fileio import sha256_tree
from steerkit.pipeline import devices, dvc, events, graph, plan
from steerkit.pipeline import summary as report
from steerkit.pipeline.flowfile import deployment_settings
from steerkit.pipeline.ledger import Ledger
from steerkit.pipeline.lock import holds_project_lock
from steerkit.pipeline.params import load_params
from steerkit.pipeline.run import flow_stage, offline_env, retry_condition

offline_env(Path(__file__).resolve().parents[1])  # before prefect reads its settings

from prefect import (  # noqa: E402
    artifacts,
    flow,
    get_run_logger,
    runtime,
    task,
)
from prefect.cache_policies import INPUTS, TASK_SOURCE  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

FLOW_NAME = "steerkit-pipeline"
ARTIFACT_KEY = "steerkit-pipeline"
CACHE = (INPUTS - "threads" - "placement") + TASK_SOURCE  # a stage's command lines, input hashes, upstream results


@task(name="stage", task_run_name="{stage}[{name}]", cache_policy=CACHE, persist_result=True,
      retry_condition_fn=retry_condition)  # fmt: skip
def stage_task(
    stage: str,
    name: str | None,
    root: str,
    params: str,
    commands: list,
    inputs: dict,
    upstream: Any = None,
    threads: int = 0,
    placement: devices.Devices | None = None,
    recheck: bool = False,
) -> dict[str, Any]:
    """One stage, once per flow run, in its own process on a leased device (``commands``, ``inputs``,
    ``upstream``: the cache key); its outputs' hashes and where and when it ran. ``recheck``: skipped when
    its inputs hash the same once its upstream ran."""
    os.chdir(root)  # paths in params.yaml and the outputs are relative to the project root
    node = graph.node(load_params(params), stage, name)
    log, run_id = get_run_logger().info, str(runtime.flow_run.id)
    return flow_stage(node, root, params, threads, log, placement, run_id, recheck)


@flow(name=FLOW_NAME, log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
@holds_project_lock  # one run per project at a time: a second one is refused with who holds it
def pipeline(
    root: str = ".",
    params: str = "params.yaml",
    groups: list[str] | None = None,
    commit: bool = True,
    retries: int = 1,
    retry_delay_seconds: float = 5.0,
    refresh_cache: bool = False,
    force: bool = False,
    threads: int | None = None,
    placement: Any = None,  # a devices.Devices (None: auto); Any: Prefect validates no dataclass here
    gpu_workers: bool = False,
) -> dict[str, Any]:
    """params.yaml → pairs → vectors → evaluation → transfer → composition → catalog, then ``dvc commit``."""
    log, t0, started = get_run_logger(), time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // 2)  # two stages at a time
    root = str(Path(root).resolve())
    os.chdir(root)
    groups = tuple(groups or ())
    p = load_params(params)
    view = dvc.stale(root)
    stale, known = view if view is not None else (None, None)
    tasks = plan.make_plan(p, groups, stale, known, force)
    log.info("plan: %s", ", ".join(f"{t.node.address}={'run' if t.run else 'up to date'}" for t in tasks))
    if foreign := sorted((stale or set()) - {t.node.address for t in tasks} - {"catalog"}):
        log.warning("dvc.yaml stages this flow does not run are out of date (`dvc repro` them): %s", foreign)
    futures: dict[str, Any] = {}
    base = stage_task.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    for t in (t for t in tasks if t.run):  # in stage order; a task waits for the futures it reads from
        task_ = base.with_options(refresh_cache=True) if refresh_cache or t.refresh else base
        with devices.dask_annotation(graph.spec(t.node.stage).device and gpu_workers):  # GPU=1 on a Dask cluster
            futures[t.node.address] = task_.submit(
                t.node.stage, t.node.name, root, params, t.node.argv, t.inputs,
                upstream=[futures[u.address] for u in t.upstream], threads=threads, placement=placement,
                recheck=t.recheck,
            )  # fmt: skip
    progress = artifacts.create_progress_artifact(0.0, key=ARTIFACT_KEY + "-progress", description="stages done")
    for done, _ in enumerate(as_completed(list(futures.values())), 1):
        artifacts.update_progress_artifact(progress, 100.0 * done / len(futures))

    out = report.Outcome(up_to_date=sum(not t.run for t in tasks))
    for address, future in futures.items():
        out.record(address, future.state)
    out.edited = plan.edited_outputs(out.results)
    if not out.failed and not out.edited:
        ran = [a for a in out.results if known is not None and a in known]
        if commit and ran:
            dvc.commit(root, ran)
            out.committed += ran
        catalog = graph.node(p, "catalog")
        if plan.catalog_due(force, stale, bool(futures), catalog.outs[0]):
            history, inputs = plan.history_state(), {d: sha256_tree(d) for d in catalog.deps}
            again = base.with_options(refresh_cache=True)  # the catalog: after the commit, never from the cache
            state = again("catalog", None, root, params, catalog.argv, inputs, threads=threads, placement=placement,
                          return_state=True)  # fmt: skip
            out.record("catalog", state)
            out.catalog_rebuilt = "catalog" not in out.failed
            if out.catalog_rebuilt and commit and known is not None and "catalog" in known:
                regated = plan.gates_released_by_the_catalog(known, history)
                dvc.commit(root, ["catalog", *regated])
                out.committed += ["catalog", *regated]
    Ledger(root, str(runtime.flow_run.id)).close()  # the run's stages have ended: nothing will run them again
    summary = report.summarize(p, out, view is not None, commit, time.perf_counter() - t0, root, groups, started)
    events.emit(events.gate_events(p.model.dir, summary["rows"]))  # what automations act on: a held vector
    for key, table, what in (
        ("-table", report.table_rows(summary), f"steerkit pipeline on {summary['model']}: {summary['message']}"),
        ("-release", report.gate_rows(summary), "release gate: promoted / held per behavior, and why"),
    ):
        artifacts.create_table_artifact(table=table, key=ARTIFACT_KEY + key, description=what)
    artifacts.create_markdown_artifact(report.markdown(summary), key=ARTIFACT_KEY + "-report", description="summary")
    if not summary["ok"]:
        raise report.PipelineFailed(summary["message"], summary)
    log.info(summary["message"])
    return summary


def task_runner(runner: str = "threads", workers: int = 2, dask_address: str | None = None) -> Any:
    """threads (default), or Dask: a local cluster of ``workers`` threads in this process, or ``dask_address``."""
    if runner not in ("threads", "dask"):
        raise SteerkitError(f"unknown task runner {runner!r}", where="runner", fix="use threads or dask")
    if runner == "threads" and not dask_address:
        return ThreadPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner  # a dependency of steerkit

    # threads in one process share this process's Prefect API; worker processes would each start their own
    local = {"n_workers": 1, "threads_per_worker": workers, "processes": False, "dashboard_address": None}
    return DaskTaskRunner(address=dask_address) if dask_address else DaskTaskRunner(cluster_kwargs=local)


def run_pipeline(
    root: str = ".",
    runner: str = "threads",
    workers: int | None = None,
    dask_address: str | None = None,
    devices_spec: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the flow (``options``: its parameters) on the chosen task runner and devices; returns the summary.
    On a Dask cluster (``dask_address``) the workers own their devices: nothing is pinned here."""
    load_params(Path(root) / options.get("params", "params.yaml"), root=root)  # fail before Prefect starts
    placement = devices.Devices() if dask_address else devices.parse_devices(devices_spec)
    workers = workers or max(2, len(placement.gpus))  # a GPU stage per device, file stages beside them
    threads = 0 if dask_address else max(1, (os.cpu_count() or 1) // workers)  # the tasks share the cores
    flow_run = pipeline.with_options(task_runner=task_runner(runner, workers, dask_address))
    state = flow_run(root=root, threads=threads, placement=placement, return_state=True, **options)
    if state.is_completed():
        return state.result()
    exc = state.result(raise_on_failure=False)
    return exc.summary if isinstance(exc, report.PipelineFailed) else report.failed_summary(f"the flow failed: {exc}")


def deployment(root: str | Path = ".", cron: str | None = None, name: str | None = None) -> Any:
    """The pipeline's runner deployment on its cron schedule (nothing is registered until ``apply``/serve)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.schedules import Cron

    s, limit = deployment_settings(root), deployment_settings(root)["concurrency_limit"]
    schedule = Cron(cron or s["cron"], timezone=s["timezone"]) if s["timezone"] else Cron(cron or s["cron"])
    return pipeline.to_deployment(
        name=name or s["name"], schedule=schedule, tags=s["tags"], description=s["description"],
        parameters={**s["parameters"], "root": str(Path(root).resolve())},
        concurrency_limit=ConcurrencyLimitConfig(**limit) if limit else None,  # one run per project, Prefect's side
    )  # fmt: skip


def serve(root: str | Path = ".", cron: str | None = None, name: str | None = None) -> None:
    """Register the deployment and run its scheduled flow runs in this process until stopped."""
    from prefect import serve as prefect_serve

    prefect_serve(deployment(root, cron, name))
