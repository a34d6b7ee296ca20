"""``steerkit pipeline stage|check|run|serve``: the chain of params.yaml (thin over steerkit.pipeline and flows/)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Column, Table

from ..pipeline import graph
from ..pipeline.params import DEFAULT_PARAMS, load_params
from ..synth.config import GenerateConfig
from .options import command, console, knob_option

pipeline_app = typer.Typer(
    help="The whole chain in params.yaml: DVC stages (`dvc repro`) and the Prefect flow "
    "(`steerkit pipeline run`, also `make run`).",
    no_args_is_help=True,
)
ParamsOpt = typer.Option(
    Path(DEFAULT_PARAMS), "--params", help="The parameters file (paths in it are relative to the project root)."
)
WithOpt = typer.Option([], "--with", help="Include an optional behavior group (e.g. bipo).")


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")


def shell_line(argv: tuple[str, ...] | list[str]) -> str:
    return "steerkit " + " ".join(shlex.quote(a) for a in argv)


@pipeline_app.command("stage")
@command()
def stage(
    stage_name: str = typer.Argument(..., metavar="STAGE", help="One of: " + ", ".join(graph.STAGE_NAMES) + "."),
    name: Optional[str] = typer.Argument(None, help="The behavior (or, for compose, the combination)."),
    params: Path = ParamsOpt,
) -> None:
    """Run one stage of params.yaml from the project root (what dvc.yaml calls)."""
    from ..pipeline.run import run_stage

    res = run_stage(
        stage_name, name, params, echo=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
    )
    console.print(f"[green]✓[/] {stage_name}{' ' + name if name else ''} ({res['seconds']:.0f} s)")


@pipeline_app.command("check")
@command()
def check(
    params: Path = ParamsOpt,
    commands: bool = typer.Option(
        False, "--commands", help="Also print the plain `steerkit` command lines each stage amounts to."
    ),
    with_: list[str] = WithOpt,
) -> None:
    """Validate params.yaml and show what the pipeline will build (the recipe's values filled in)."""
    from ..errors import SteerkitError

    p = load_params(params)
    chosen = p.selected(tuple(with_))
    missing = [f for b in chosen.values() for f in (b.data.train, b.data.test) if not Path(f).is_file()]
    table = Table(
        *(Column(h, no_wrap=True) for h in ("behavior", "layer", "epochs", "lr", "limit", "baseline")),
        Column("m", overflow="fold"),
        Column("judge", no_wrap=True),
        box=box.SIMPLE_HEAD,
        title=f"{params}: {p.model.spec} (recipe {p.recipe.name})",
    )
    for b in chosen.values():
        t, e = b.train, b.evaluate
        table.add_row(
            b.name + (f" ({b.group})" if b.group else ""),
            str(t.layer),
            str(t.epochs),
            f"{t.lr:g}",
            str(b.train_options.limit or "all"),
            b.train_options.baseline,
            " ".join(f"{m:g}" for m in e.multipliers),
            e.judge,
        )
    console.print(table)
    for b in chosen.values():
        console.print(f"{b.name}: {b.data.train} → {b.data.test}", highlight=False, soft_wrap=True)
    if commands:
        for n in graph.nodes(p, tuple(with_)):
            for argv in n.argv:
                console.print(f"[dim]{n.address}:[/] " + shell_line(argv), highlight=False, soft_wrap=True)
    if missing:
        raise SteerkitError(
            "data files named in the parameters do not exist: " + ", ".join(missing),
            where=str(params),
            fix="fetch them (`make fetch-bipo` for the BiPO data) or fix the paths",
        )
    console.print(f"[green]✓[/] {params} is valid")


@pipeline_app.command("sync")
@command()
def sync(
    params: Path = ParamsOpt,
    dvc_yaml: Path = typer.Option(Path("dvc.yaml"), "--dvc-yaml", help="The pipeline file to check."),
    write: bool = typer.Option(False, "--write", help="Rewrite its derived parts to what the graph says now."),
) -> None:
    """Check (or --write) the parts of dvc.yaml that follow from the stage graph: each stage's code deps (the
    steerkit files it runs: a code change reruns the stages it touches, a docs or CLI change does not) and
    the artifacts DVC's registry knows the vectors by."""
    from ..errors import SteerkitError
    from ..fileio import atomic_write_text
    from ..pipeline.code import stage_code
    from ..pipeline.dvcyaml import sync as synced

    for s in graph.STAGE_NAMES:
        console.print(f"{s}: runs {len(stage_code(s))} files", highlight=False)
    text = dvc_yaml.read_text(encoding="utf-8")
    p = load_params(params)
    fresh = synced(text, graph.artifacts(p), graph.foreach_items(p))
    if fresh == text:
        console.print(f"[green]✓[/] {dvc_yaml} is in step with the graph")
    elif write:
        atomic_write_text(dvc_yaml, fresh)
        console.print(f"[green]✓[/] {dvc_yaml}: code lists and artifacts rewritten")
    else:
        raise SteerkitError(
            "dvc.yaml's code lists or artifacts are not what the graph says now",
            where=str(dvc_yaml),
            fix="run `steerkit pipeline sync --write` and commit dvc.yaml",
        )


@pipeline_app.command("add")
@command()
def add(
    ctx: typer.Context,
    behavior: str = typer.Argument(..., help="The new behavior's name, e.g. pirate (its folder everywhere)."),
    describe: str = typer.Option(..., "--describe", help="The behavior in words, e.g. 'talks like a pirate'."),
    pairs: Optional[int] = knob_option(GenerateConfig, "pairs"),
    teacher: Optional[str] = knob_option(GenerateConfig, "teacher"),
    questions: Optional[str] = knob_option(GenerateConfig, "questions"),
    seed: Optional[int] = knob_option(GenerateConfig, "seed"),
    params: Path = ParamsOpt,
    run_it: bool = typer.Option(False, "--run", help="Then run the pipeline (generate, train, evaluate, gate, ...)."),
) -> None:
    """A behavior from a description, in one command: add it to params.yaml (its pairs written by a teacher),
    bring dvc.yaml in step, and with --run build it — generated pairs, a vector, its evaluation against the
    very prompts that made the data and CAA, and the gate's decision. Running again regenerates nothing."""
    from ..fileio import atomic_write_text
    from ..pipeline.dvcyaml import sync as synced
    from ..pipeline.params import add_behavior

    given = {k: v for k, v in ctx.params.items() if k in ("pairs", "teacher", "questions", "seed") and v is not None}
    p = add_behavior(params, behavior, {"generate": {"describe": describe, **given}})
    dvc_yaml = params.parent / "dvc.yaml"
    if dvc_yaml.is_file():
        atomic_write_text(
            dvc_yaml, synced(dvc_yaml.read_text(encoding="utf-8"), graph.artifacts(p), graph.foreach_items(p))
        )
    console.print(f"[green]✓[/] {behavior} added to {params} (its pairs: data/generated/{behavior}/), dvc.yaml in step")
    if run_it:  # `steerkit pipeline run` itself, with its defaults (params named relative to the project root)
        cmd = ctx.parent.command.get_command(ctx.parent, "run")
        with cmd.make_context("run", ["--params", params.name, "--root", str(params.parent)], parent=ctx.parent) as sub:
            cmd.invoke(sub)


@pipeline_app.command("notify")
@command()
def notify(
    block: str = typer.Option(
        ..., "--block", help="The notification block to send through, as TYPE/NAME (e.g. slack-webhook/alerts)."
    ),
    automation_file: Path = typer.Option(
        Path("automations/vector-held.yaml"), "--automation", help="The automation to create."
    ),
) -> None:
    """Be told when a run holds a vector: create the project's Prefect automation on the configured server."""
    from ..pipeline.events import apply_automation

    console.print(f"[green]✓[/] automation {apply_automation(automation_file, block)} created from {automation_file}")


@pipeline_app.command("run")
@command()
def run(
    params: Path = ParamsOpt,
    root: Path = typer.Option(Path("."), help="Project root (holds dvc.yaml and params.yaml)."),
    runner: str = typer.Option("threads", help="Task runner: threads, or dask (a local cluster, or --dask-address)."),
    workers: Optional[int] = typer.Option(
        None, help="Tasks at once (threads or local Dask workers). [default: 2, or one per GPU when there are more]"
    ),
    devices: str = typer.Option(
        "auto",
        help="Devices the stages that load a model run on, one stage per device at a time, each pinned to its "
        "device: auto (every visible GPU, else the CPU), cpu, or a list such as cuda:0,cuda:1. "
        "Ignored with --dask-address (the workers own their devices).",
    ),
    dask_address: Optional[str] = typer.Option(None, help="Address of a running Dask scheduler (tcp://host:8786)."),
    dask_gpus: bool = typer.Option(
        False,
        "--dask-gpus",
        help="With --dask-address: stages that load a model ask the scheduler for a worker with the resource "
        "GPU=1 (start GPU workers with `dask worker ... --resources GPU=1`). See docs/cluster.md.",
    ),
    with_: list[str] = typer.Option(
        [], "--with", help="Also build an optional behavior group (e.g. bipo; not in DVC's stages)."
    ),
    commit: bool = typer.Option(
        True, "--commit/--no-commit", help="`dvc commit` what the run made when every task succeeded."
    ),
    retries: int = typer.Option(1, help="Retries of a failed stage before the run fails."),
    refresh_cache: bool = typer.Option(
        False, help="Ignore Prefect's cached stage results (DVC's up-to-date check still applies)."
    ),
    force: bool = typer.Option(False, help="Run every stage, even those DVC reports up to date."),
) -> None:
    """Run the pipeline as a Prefect flow (parallel per behavior, retries, caching), then `dvc commit` it."""
    from ..errors import SteerkitError
    from ..pipeline.devices import parse_devices
    from ..pipeline.dvcyaml import in_step
    from ..pipeline.flowfile import load_flow
    from ..pipeline.run import offline_env
    from ..pipeline.summary import print_summary

    if runner not in ("threads", "dask"):
        raise SteerkitError(f"unknown task runner {runner!r}", where="--runner", fix="use threads or dask")
    if dask_gpus and not dask_address:
        raise SteerkitError(
            "--dask-gpus needs a cluster", where="--dask-gpus", fix="give --dask-address, or --devices for this machine"
        )
    if not dask_address:
        parse_devices(devices)  # a bad list fails here, before Prefect starts
    if (root / "dvc.yaml").is_file() and (problem := in_step(root, load_params(root / params, root=root))):
        raise SteerkitError(problem, where=str(root / "dvc.yaml"), fix="`steerkit pipeline sync --write`")
    offline_env(root)
    flows = load_flow(root)
    result = flows.run_pipeline(
        root=str(root.resolve()),
        params=str(params),
        runner=runner,
        workers=workers,
        dask_address=dask_address,
        devices_spec=devices,
        gpu_workers=dask_gpus,
        groups=list(with_),
        commit=commit,
        retries=retries,
        refresh_cache=refresh_cache,
        force=force,
    )
    print_summary(result, console)
    if not result["ok"]:
        raise typer.Exit(1)


@pipeline_app.command("serve")
@command()
def serve(
    root: Path = typer.Option(Path("."), help="Project root."),
    cron: Optional[str] = typer.Option(None, help="Cron schedule (default: the one in prefect.yaml)."),
    name: Optional[str] = typer.Option(None, help="Deployment name (default: the one in prefect.yaml)."),
) -> None:
    """Register the pipeline deployment on its cron schedule and serve it (runs until stopped, Ctrl-C)."""
    from ..pipeline.flowfile import load_flow
    from ..pipeline.run import offline_env

    offline_env(root)
    load_flow(root).serve(root=str(root.resolve()), cron=cron, name=name)
