"""``steerkit pipeline …``: the chain in params.yaml as stages, for ``dvc.yaml`` and the Prefect flow.

Every stage is the plain ``steerkit`` command line(s) that :func:`stage_commands` builds from
``params.yaml`` — ``steerkit data prepare``, ``train``, ``evaluate``, ``derive lora``, ``transfer``,
``compose``, ``catalog build`` — run in this process by :func:`run_stage`. ``dvc.yaml`` calls
``steerkit pipeline stage STAGE NAME``, and ``flows/pipeline.py`` runs that same command as its
Prefect tasks. Neither holds logic of its own, so a flow run and ``dvc repro`` make the same files.

Paths are relative to the project root: run from it (DVC does; the flow changes into it).
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_errors import fail as _fail
from .errors import SteerkitError
from .params import DEFAULT_PARAMS, Behavior, Params, load_params

pipeline_app = typer.Typer(help="The whole chain in params.yaml: DVC stages (`dvc repro`) and the Prefect flow "
                                "(`steerkit pipeline run`, also `make run`).", no_args_is_help=True)
console = Console()

#: stage name → whether it runs once per behavior ("behavior"), per combination ("combo") or once (None)
STAGES: dict[str, str | None] = {"prepare": "behavior", "train": "behavior", "evaluate": "behavior", "derive": None,
                                 "transfer": "behavior", "compose": "combo", "catalog": None}
STAGING = Path(".cache") / "pipeline-staging"


class StageError(SteerkitError, RuntimeError):
    """A stage's command failed (its own error was printed above)."""


# --------------------------------------------------------------------------------------- paths
def pairs_file(b: str, split: str) -> str:
    return f"data/pairs/{b}/{split}.jsonl"


def vector_dir(p: Params, b: str) -> str:
    return f"vectors/{p.model.dir}/{b}"


def vector_file(p: Params, b: Behavior, method: str = "bipo") -> str:
    suffix = "" if method == "bipo" else f".{method}"
    return f"{vector_dir(p, b.name)}/L{b.train.layer}{suffix}.safetensors"


def report_file(p: Params, stage: str, name: str, ext: str = "json") -> str:
    return f"reports/{stage}/{p.model.dir}/{name}.{ext}"


def adapter_dir(p: Params) -> str:
    return f"models/{p.model.dir}/{p.derive.name}"


def stage_outputs(p: Params, stage: str, name: str | None = None) -> list[str]:
    """The paths a stage writes (as declared in dvc.yaml): files, or a folder for train and derive."""
    if stage == "prepare":
        return [pairs_file(name, "train"), pairs_file(name, "test")]
    if stage == "train":
        return [vector_dir(p, name)]
    if stage == "evaluate":
        return [report_file(p, "eval", name), report_file(p, "eval", name, "png")]
    if stage == "derive":
        return [adapter_dir(p), report_file(p, "derive", p.derive.name)]
    if stage == "transfer":
        return [report_file(p, "transfer", name, ext) for ext in ("json", "png", "md")]
    if stage == "compose":
        return [report_file(p, "compose", name), report_file(p, "compose", name, "png")]
    if stage == "catalog":
        return ["vectors/catalog.json"]
    raise _unknown_stage(stage)


def _unknown_stage(stage: str) -> StageError:
    return StageError(f"unknown stage {stage!r}", fix="use one of: " + ", ".join(STAGES))


# ------------------------------------------------------------------------------------ commands
def _num(x: float | int) -> str:
    return repr(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _xs(flag: str, values: tuple[float, ...]) -> list[str]:
    return [f"{flag}={_num(v)}" for v in values]


def _limit(limit: int | None) -> list[str]:
    return [] if limit is None else ["--limit", str(limit)]


def stage_commands(p: Params, stage: str, name: str | None = None, groups: tuple[str, ...] = (),
                   out_dir: str | None = None) -> list[list[str]]:
    """The plain ``steerkit`` command lines (argv after ``steerkit``) one stage runs, in order.

    ``out_dir`` (train only) writes the vectors there instead of their folder (the staging folder).
    """
    kind = STAGES.get(stage, "?")
    if kind == "?":
        raise _unknown_stage(stage)
    if kind and not name:
        raise StageError(f"stage {stage!r} runs once per {kind}: name one", fix=f"steerkit pipeline stage {stage} NAME")
    model = ["--model", p.model.spec]
    if stage == "prepare":
        b = p.behavior(name, groups)
        return [["data", "prepare", b.name, b.data.train, "--test", b.data.test, "--format", b.data.format,
                 "--root", "."]]
    if stage == "train":
        b = p.behavior(name, groups)
        t = b.train
        where = out_dir or vector_dir(p, b.name)
        common = ["--data", pairs_file(b.name, "train"), "--behavior", b.name, *model, "--layer", str(t.layer)]
        cmds = [["train", *common, "--out", f"{where}/L{t.layer}.safetensors", "--method", "bipo",
                 "--epochs", str(t.epochs), "--lr", _num(t.lr), "--beta", _num(t.beta), "--batch-size", str(t.batch_size),
                 "--warmup", str(t.warmup), "--weight-decay", _num(t.weight_decay), "--seed", str(t.seed),
                 *_limit(t.limit)]]
        if t.baseline == "caa":
            cmds.append(["train", *common, "--out", f"{where}/L{t.layer}.caa.safetensors", "--method", "caa",
                         *_limit(t.limit)])
        return cmds
    if stage == "evaluate":
        b = p.behavior(name, groups)
        e = b.evaluate
        baseline = ["--baseline", vector_file(p, b, "caa")] if b.train.baseline == "caa" else []
        return [["evaluate", "--vector", vector_file(p, b), "--test", pairs_file(b.name, "test"), *model,
                 *_xs("--multiplier", e.multipliers), "--judge", e.judge, "--n-open", str(e.n_open), *baseline,
                 "--out", report_file(p, "eval", b.name), *_limit(e.limit), "--texts", p.evaluate.texts,
                 "--batch-size", str(e.batch_size), "--max-new-tokens", str(e.max_new_tokens)]]
    if stage == "derive":
        d = p.derive
        return [["derive", "lora", "--data", d.data, "--out", adapter_dir(p), "--steps", str(d.steps), *model,
                 "--lr", _num(d.lr), "--r", str(d.r), "--alpha", _num(d.alpha), "--batch-size", str(d.batch_size),
                 "--max-length", str(d.max_length), "--seed", str(d.seed), "--probe-texts", p.evaluate.texts, "--report", report_file(p, "derive", d.name)]]
    if stage == "transfer":
        b = p.behavior(name, groups)
        t = p.transfer
        return [["transfer", "--vector", vector_file(p, b), "--target", adapter_dir(p), "--test", pairs_file(b.name, "test"),
                 "--out", report_file(p, "transfer", b.name), *model, *_xs("--multiplier", t.multipliers), *_limit(t.limit),
                 "--merged" if t.merged else "--no-merged", "--probe-texts", p.evaluate.texts,
                 "--batch-size", str(t.batch_size)]]
    if stage == "compose":
        c = p.compose
        if name not in c.combos:
            raise StageError(f"no combination {name!r} in combos", where=str(p.path),
                             fix="use one of: " + (", ".join(sorted(c.combos)) or "(none defined)"))
        combo = c.combos[name]
        vecs = [p.behavior(v) for v in combo.vectors]
        return [["compose", *[a for v in vecs for a in ("--vector", vector_file(p, v))],
                 *[f"--weight={_num(w)}" for w in combo.weights],
                 *[a for v in vecs for a in ("--test", f"{v.name}={pairs_file(v.name, 'test')}")],
                 "--name", name, "--out", report_file(p, "compose", name), *model, *_xs("--multiplier", c.multipliers),
                 *_limit(c.limit), "--fluency" if c.fluency else "--no-fluency", "--probe-texts", p.evaluate.texts,
                 "--batch-size", str(c.batch_size)]]
    if stage == "catalog":
        return [["catalog", "build", "--root", "."]]
    raise _unknown_stage(stage)  # pragma: no cover


def shell_line(argv: list[str]) -> str:
    return "steerkit " + " ".join(shlex.quote(a) for a in argv)


# ------------------------------------------------------------------------------------- running
def invoke(argv: list[str]) -> None:
    """Run one ``steerkit`` command line in this process, exactly as the shell would; raise on failure."""
    from typer.main import get_command

    from .cli import app  # imported here: cli.py registers this module's commands

    try:
        code = get_command(app).main(args=list(argv), prog_name="steerkit", standalone_mode=False)
    except SteerkitError:
        raise
    except Exception as exc:  # click usage errors and anything a command did not turn into a SteerkitError
        message = getattr(exc, "format_message", lambda: str(exc))()
        raise StageError(f"`{shell_line(argv)}` failed: {type(exc).__name__}: {message}") from exc
    if code not in (None, 0):
        raise StageError(f"`{shell_line(argv)}` failed with exit status {code} (its error is printed above)")


def run_stage(stage: str, name: str | None = None, params: str | Path | Params = DEFAULT_PARAMS,
              groups: tuple[str, ...] = (), echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one stage (all its commands) from the project root; raise ``StageError`` if one fails.

    The train stage writes into a staging folder and moves it into place only when every command
    succeeded, so a failed run leaves the previous vectors untouched. Returns what ran and how long.
    """
    p = params if isinstance(params, Params) else load_params(params)
    say = echo or (lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    t0 = time.perf_counter()
    if stage == "train":
        final = Path(vector_dir(p, name))
        staging = STAGING / f"{p.model.dir}.{name}.{uuid.uuid4().hex[:8]}"
        cmds = stage_commands(p, stage, name, groups, out_dir=staging.as_posix())
        try:
            for argv in cmds:
                say("$ " + shell_line(argv))
                invoke(argv)
            _replace_dir(staging, final)
            say(f"→ {final.as_posix()}/ (moved into place from {staging.as_posix()}/ now that every command succeeded)")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        cmds = stage_commands(p, stage, name, groups)
        for argv in cmds:
            say("$ " + shell_line(argv))
            invoke(argv)
    return {"stage": stage, "name": name, "commands": [shell_line(a) for a in cmds],
            "outputs": stage_outputs(p, stage, name), "seconds": round(time.perf_counter() - t0, 2)}


def _replace_dir(new: Path, final: Path) -> None:
    """Put folder ``new`` where ``final`` is (its old content is removed only after the move)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def stage_names(p: Params, stage: str, groups: tuple[str, ...] = ()) -> list[str | None]:
    kind = STAGES[stage]
    if kind == "behavior":
        names = list(p.selected(groups))
        return names if stage != "transfer" else list(p.behaviors)  # optional behaviors: no transfer
    if kind == "combo":
        return list(p.compose.combos)
    return [None]


def offline_env(root: str | Path = ".") -> None:
    """The Makefile's Prefect/DVC settings, for runs started without it (existing values win).

    Prefect state stays in the project (``.prefect/``), no telemetry (its absence causes
    "database is locked" errors offline), and a patient start for the temporary local API.
    Must run before prefect is imported.
    """
    root = Path(root).resolve()
    for key, value in {"PREFECT_HOME": str(root / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
                       "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(root / ".cache" / "dvc-site"),
                       "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)


# ------------------------------------------------------------------------------------------ CLI
ParamsOpt = typer.Option(Path(DEFAULT_PARAMS), "--params", help="The parameters file (paths in it are relative to the project root).")


@pipeline_app.command("stage")
def stage_cmd(stage: str = typer.Argument(..., help="prepare, train, evaluate, derive, transfer, compose or catalog."),
              name: Optional[str] = typer.Argument(None, help="The behavior (or, for compose, the combination)."),
              params: Path = ParamsOpt) -> None:
    """Run one stage of params.yaml from the project root (what dvc.yaml calls): prints and runs its commands."""
    try:
        res = run_stage(stage, name, params)
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"[green]✓[/] {stage}{' ' + name if name else ''} ({res['seconds']:.0f} s)")


@pipeline_app.command("check")
def check_cmd(params: Path = ParamsOpt,
              commands: bool = typer.Option(False, "--commands", help="Also print every stage's command lines."),
              with_: List[str] = typer.Option([], "--with", help="Include an optional behavior group (e.g. bipo).")) -> None:
    """Validate params.yaml and show what the pipeline will build."""
    try:
        p = load_params(params)
        chosen = p.selected(tuple(with_))
        missing = [f for b in chosen.values() for f in (b.data.train, b.data.test) if not Path(f).is_file()]
        table = Table("behavior", "data", "layer", "epochs", "lr", "limit", "baseline", "multipliers", "judge",
                      title=f"{params}: model {p.model.spec} → vectors/{p.model.dir}/")
        for b in chosen.values():
            t, e = b.train, b.evaluate
            table.add_row(b.name + (f" ({b.group})" if b.group else ""), f"{b.data.train}\n{b.data.test}", str(t.layer),
                          str(t.epochs), f"{t.lr:g}", str(t.limit or "all"), t.baseline,
                          ", ".join(f"{m:g}" for m in e.multipliers), e.judge)
        console.print(table)
        if commands:
            for stage in STAGES:
                for n in stage_names(p, stage, tuple(with_)):
                    for argv in stage_commands(p, stage, n, tuple(with_)):
                        console.print(f"[dim]{stage}{' ' + n if n else ''}:[/] " + shell_line(argv), highlight=False, soft_wrap=True)
        if missing:
            raise SteerkitError("data files named in the parameters do not exist: " + ", ".join(missing),
                                where=str(params), fix="fetch them (`make fetch-bipo` for the BiPO data) or fix the paths")
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"[green]✓[/] {params} is valid")


def _flow_module(root: Path) -> Any:
    """flows/pipeline.py of the project at ``root`` (the flow file is not part of the package)."""
    import importlib.util
    import sys

    path = root / "flows" / "pipeline.py"
    if not path.is_file():
        raise SteerkitError("no flow file", where=str(path), fix="run from the steerkit project root")
    name = "steerkit_flows_pipeline"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pipeline_app.command("run")
def run_cmd(params: Path = ParamsOpt,
            root: Path = typer.Option(Path("."), help="Project root (holds dvc.yaml and params.yaml)."),
            runner: str = typer.Option("threads", help="Task runner: threads, or dask (a local cluster, or --dask-address)."),
            workers: int = typer.Option(2, help="Tasks at once (threads or local Dask workers)."),
            dask_address: Optional[str] = typer.Option(None, help="Address of a running Dask scheduler (tcp://host:8786)."),
            with_: List[str] = typer.Option([], "--with", help="Also build an optional behavior group (e.g. bipo; not committed to DVC's stages)."),
            commit: bool = typer.Option(True, "--commit/--no-commit", help="`dvc commit` what the run made when every task succeeded."),
            retries: int = typer.Option(1, help="Retries of a failed stage before the run fails."),
            refresh_cache: bool = typer.Option(False, help="Ignore Prefect's cached stage results (DVC's up-to-date check still applies)."),
            force: bool = typer.Option(False, help="Run every stage, even those DVC reports up to date.")) -> None:
    """Run the pipeline as a Prefect flow (parallel per behavior, retries, caching), then `dvc commit` it."""
    offline_env(root)
    try:
        flows = _flow_module(root.resolve())
        result = flows.run_pipeline(root=str(root.resolve()), params=str(params), runner=runner, workers=workers,
                                    dask_address=dask_address, groups=list(with_), commit=commit, retries=retries,
                                    refresh_cache=refresh_cache, force=force)
    except SteerkitError as exc:
        _fail(exc)
    flows.print_summary(result, console)
    if not result["ok"]:
        raise typer.Exit(1)


@pipeline_app.command("serve")
def serve_cmd(root: Path = typer.Option(Path("."), help="Project root."),
              cron: Optional[str] = typer.Option(None, help="Cron schedule (default: the one in prefect.yaml)."),
              name: Optional[str] = typer.Option(None, help="Deployment name (default: the one in prefect.yaml).")) -> None:
    """Register the pipeline deployment on its cron schedule and serve it (runs until stopped, Ctrl-C)."""
    offline_env(root)
    try:
        flows = _flow_module(root.resolve())
        flows.serve(root=str(root.resolve()), cron=cron, name=name)
    except SteerkitError as exc:
        _fail(exc)
