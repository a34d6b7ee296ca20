"""``steerkit catalog build|ls|show|get|promote|rollback``: the vector catalog and its releases (thin over
steerkit.catalog)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Column, Table

from ..eval.metrics import CI, METRICS, metric
from .options import RootOpt, command, console

catalog_app = typer.Typer(
    help="The vector catalog (vectors/catalog.json): build it, list it, fetch vectors from it.", no_args_is_help=True
)

RepoOpt = typer.Option(
    None, "--repo", help="Read the catalog from this git/DVC repository (URL or path) instead of --root."
)
RevOpt = typer.Option(None, "--rev", help="Git revision (commit, tag, branch) to read with --repo.")
ModelOpt = typer.Option(
    None, "--model", "-m", help="Model id or folder name (needed when several models have the behavior)."
)
MethodOpt = typer.Option("bipo", "--method", help="bipo, caa, … ('any' matches every method).")
LayerOpt = typer.Option(None, "--layer", help="Only vectors that steer this layer.")
ChannelOpt = typer.Option(
    "stable",
    "--channel",
    help="stable (the released version: what applications load), candidate (the pipeline's latest) or any.",
)
VersionOpt = typer.Option(None, "--version", help="A release by number (also one that is no longer stable).")


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")


def _open(root: Path, repo: Optional[str], rev: Optional[str]) -> Any:
    from ..catalog import Catalog

    if repo is not None:
        return Catalog.from_repo(repo, rev)
    if rev is not None:
        return Catalog.open(root, rev=rev)
    return Catalog.open(root)


def _method(method: str) -> Optional[str]:
    return None if method.strip().lower() in ("any", "*", "") else method


def _channel(channel: str) -> Optional[str]:
    from ..catalog.index import CHANNELS
    from ..errors import SteerkitError

    if channel.strip().lower() in ("any", "*", ""):
        return None
    if channel not in CHANNELS:
        raise SteerkitError(f"unknown channel {channel!r}", where="--channel", fix="use stable, candidate or any")
    return channel


def _range(r: Optional[list]) -> str:
    return "—" if not r else f"[{r[0]:g}, {r[1]:g}]"


def _num(v: object) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


@catalog_app.command("build")
@command()
def build(
    root: Path = RootOpt,
    release: Optional[Path] = typer.Option(
        None,
        "--release",
        help="A folder of gate reports (reports/gate/<model>, relative to --root): first make the candidates "
        "they promoted the next stable versions, recorded in vectors/releases.json.",
    ),
) -> None:
    """Scan vectors/**/*.safetensors and write vectors/catalog.json (sorted; unchanged tree → same bytes)."""
    from ..layout import catalog_path
    from ..stages.catalog import catalog

    built = catalog(root, gates=release)
    if release is not None:
        console.print(outcomes_table(built.outcomes))
    n = len(built.catalog)
    console.print(f"[green]✓[/] {catalog_path(root)} ({n} vector{'s' if n != 1 else ''})")


def outcomes_table(outcomes: list) -> Table:
    """Per behavior: the gate's decision, whether it was released now, the stable version, and why."""
    table = Table("behavior", "model", "gate", "stable", "why", title="release gate")
    for o in outcomes:
        gate = "promoted" if o.released else {"promote": "promote (already stable)"}.get(o.decision, o.decision)
        table.add_row(o.behavior, o.model, gate, "—" if o.version is None else f"v{o.version}", "; ".join(o.reasons))
    return table


def listing(catalog: Any, width: int) -> Any:
    """The catalog as a table, or, where its identifiers would not fit ``width`` columns whole, as blocks of lines."""
    rows = [
        (
            e.behavior,
            e.method,
            e.model,
            e.channel or "—",
            "—" if e.version is None else f"v{e.version}",
            ",".join(map(str, e.layers)),
            _range(e.safe_multiplier_range),
            metric("margin_swing").show(e.metrics.get("margin_swing"), e.metrics.get("margin_swing" + CI)),
            e.sha256[:12],
        )
        for e in catalog
    ]
    heads = (
        "behavior",
        "method",
        "model",
        "channel",
        "version",
        "layers",
        "safe range",
        "margin swing [95%]",
        "sha256",
    )
    title = f"{catalog.where} — {len(catalog)} vector{'s' if len(catalog) != 1 else ''}"
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
    if sum(widths) + 2 * (len(heads) - 1) <= width:
        table = Table(
            *(Column(h, no_wrap=True) for h in heads),
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
            title=title,
        )
        for r in rows:
            table.add_row(*r)
        return table
    # narrow terminal (CI logs, cron mail): one block per vector, identifiers never broken
    table = Table(
        Column(no_wrap=True), Column(overflow="fold"), show_header=False, box=None, pad_edge=False, title=title
    )
    for r in rows:
        table.add_row(r[0], f"{r[1]} · {r[2]} · {r[3]} {r[4]}")
        table.add_row("", f"layers {r[5]} · safe range {r[6]} · margin swing {r[7]} · sha256 {r[8]}")
    return table


@catalog_app.command("ls")
@command()
def ls(
    root: Path = RootOpt,
    repo: Optional[str] = RepoOpt,
    rev: Optional[str] = RevOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the catalog as JSON."),
    history: bool = typer.Option(False, "--history", help="List the release history instead (oldest first)."),
) -> None:
    """List every catalogued vector: its channel (candidate, stable) and release version."""
    catalog = _open(root, repo, rev)
    if history:
        events = catalog.history().events
        if as_json:
            from dataclasses import asdict

            print(json.dumps([asdict(e) for e in events], indent=2, sort_keys=True, default=str))
            return
        print_history(events)
        return
    if as_json:
        print(json.dumps(catalog.to_dict(), indent=2, sort_keys=True, default=str))
        return
    console.print(listing(catalog, console.width))


def print_history(events: list) -> None:
    """One line per release event, identifiers whole (the history is read in CI logs and mail too)."""
    if not events:
        console.print("no releases yet (vectors/releases.json is empty or missing)")
    for e in events:
        console.print(
            f"{e.when}  {e.event:<8} {e.behavior} v{e.version} ({e.model}, {e.method})  sha256 {e.sha256[:12]}"
            f"  by {e.who}: {e.why}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


def _model_of(root: Path, behavior: str, model: Optional[str], method: str) -> str:
    """The model a behavior was released (or catalogued) for, when the user did not say."""
    from ..catalog.index import same_model
    from ..catalog.releases import History, ReleaseError

    known = sorted({k[1] for k in History.load(root).keys() if k[0] == behavior and k[2] == method})
    models = [m for m in known if model is None or same_model(model, m)]
    if len(models) == 1:
        return models[0]
    if models:
        raise ReleaseError(
            f"{behavior} ({method}) has releases for several models: {', '.join(models)}",
            where="--model",
            fix="name the model with --model",
        )
    raise ReleaseError(
        f"{behavior} ({method}) has no release"
        + (f" for {model}" if model else "")
        + (f"; released for: {', '.join(known)}" if known else ""),
        where=str(root / "vectors" / "releases.json"),
        fix="release it first (`steerkit catalog promote BEHAVIOR --why ...`)",
    )


@catalog_app.command("promote")
@command()
def promote_cmd(
    behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
    why: str = typer.Option(..., "--why", help="Why a person overrides the gate (recorded in the history)."),
    model: Optional[str] = ModelOpt,
    method: str = MethodOpt,
    layer: Optional[int] = LayerOpt,
    version: Optional[int] = typer.Option(
        None, "--version", help="Make this earlier release stable again (default: the current candidate)."
    ),
    root: Path = RootOpt,
) -> None:
    """Make the candidate (or release --version N) the stable version by hand, whatever the gate said.

    What it was judged on is recorded: the gate report of this very file if there is one (its
    held-out set and decision), else that no gate judged it (the next gate then says so).
    """
    from ..catalog.build import build_catalog
    from ..catalog.provenance import dvc_version, git_head, read_dvc_lock
    from ..catalog.releases import History, promote
    from ..pipeline.lock import project_lock
    from ..stages.catalog import catalog, judged_by_gate

    with project_lock(root):  # not while a pipeline run releases
        current = build_catalog(root)
        if version is not None:
            model_dir = _model_of(root, behavior, model, method)
            history = History.load(root)
            old = history.version(behavior, model_dir, method, version)
            data, source, metrics = history.read(old), old.source, old.metrics
            test_sha, rev, md5, note = old.test_sha256, old.git_rev, old.dvc_md5, f"v{version} again"
        else:
            entry = current.find(behavior, model=model, method=method, layer=layer, channel="candidate")
            model_dir, data, source = entry.model, current.read_bytes(entry), entry.path
            metrics = {"summary": entry.metrics, "off_target": entry.off_target, "dose_response": entry.dose_response}
            rev, md5 = git_head(root), dvc_version(read_dvc_lock(root), entry.path)
            gated = judged_by_gate(root, entry.model, behavior, entry.sha256)
            if gated is None:
                test_sha, note = None, "not judged by the gate"
            else:
                test_sha = (gated.get("frozen_set") or {}).get("sha256")
                metrics["gate"] = {"decision": gated.get("decision"), "checks": gated.get("checks")}
                note = f"the gate said {gated.get('decision')}"
        release = promote(
            root, behavior, model_dir, method, data, source, f"by hand ({note}): {why}", metrics, test_sha, rev, md5
        )
        catalog(root)
    console.print(f"[green]✓[/] {behavior} ({model_dir}, {method}): v{release.version} is stable ({release.path})")


@catalog_app.command("rollback")
@command()
def rollback_cmd(
    behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
    why: str = typer.Option("", "--why", help="Why (recorded in the history)."),
    model: Optional[str] = ModelOpt,
    method: str = MethodOpt,
    root: Path = RootOpt,
) -> None:
    """Make the version that was stable before the current one stable again (recorded in the history)."""
    from ..catalog.releases import rollback
    from ..pipeline import events
    from ..pipeline.lock import project_lock
    from ..stages.catalog import catalog

    with project_lock(root):  # not while a pipeline run releases
        model_dir = _model_of(root, behavior, model, method)
        release = rollback(root, behavior, model_dir, method, why)
        catalog(root)
    r = release
    events.emit([events.rollback_event(r.model, r.behavior, r.method, r.version, r.rolled_back_from, r.who, r.why)])
    console.print(f"[green]✓[/] {behavior} ({model_dir}, {method}): back to v{release.version} ({release.why})")


@catalog_app.command("register")
@command()
def register_cmd(
    root: Path = RootOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be tagged, tag nothing."),
) -> None:
    """Mirror vectors/releases.json into DVC's model registry (GTO git tags): a version tag per release, the
    stable stage where the history says. Run it after the commit that records a run's releases; running it
    twice tags nothing new. Then `dvc artifacts get REPO NAME --stage stable` fetches the stable vector."""
    from ..catalog.registry import register

    actions = register(root, dry_run=dry_run)
    for a in actions:
        console.print(f"{'would tag' if dry_run else '[green]✓[/] tagged'} {a}", highlight=False)
    if not actions:
        console.print("[green]✓[/] the registry already says what vectors/releases.json says", highlight=False)


@catalog_app.command("schemas")
@command()
def schemas_cmd(
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the JSON Schemas into this folder (e.g. docs/schemas) instead of listing them."
    ),
) -> None:
    """The JSON Schemas of what applications read: a catalog entry, a release event, a gate report."""
    from ..catalog import schemas

    if out is not None:
        for path in schemas.write(out):
            console.print(f"[green]✓[/] {path}", highlight=False)
        return
    for name, (_, version, what) in schemas.TYPES.items():
        console.print(f"{name} v{version}: {what} — {schemas.SHIPPED / schemas.file_name(name)}", highlight=False)


@catalog_app.command("show")
@command()
def show(
    behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
    model: Optional[str] = ModelOpt,
    method: str = MethodOpt,
    layer: Optional[int] = LayerOpt,
    channel: str = ChannelOpt,
    version: Optional[int] = VersionOpt,
    root: Path = RootOpt,
    repo: Optional[str] = RepoOpt,
    rev: Optional[str] = RevOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the entry as JSON."),
) -> None:
    """Show one vector's catalog entry."""
    entry = _open(root, repo, rev).find(
        behavior, model=model, method=_method(method), layer=layer, channel=_channel(channel), version=version
    )
    facts = entry.to_dict()
    if as_json:
        print(json.dumps(facts, indent=2, sort_keys=True, default=str))
        return
    table = Table(Column(no_wrap=True), Column(overflow="fold"), show_header=False)
    for k, v in facts.items():
        if k == "metrics":
            for mk, mv in sorted(v.items()):
                if mk.endswith(CI) and mk[: -len(CI)] in METRICS:
                    continue  # shown with its value
                shown = METRICS[mk].show(mv, v.get(mk + CI)) if mk in METRICS else _num(mv)
                table.add_row(f"metrics.{mk}", shown)
        else:
            table.add_row(k, json.dumps(v) if isinstance(v, list) else ("—" if v is None else str(v)))
    console.print(table)


@catalog_app.command("get")
@command()
def get(
    behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the vector (.safetensors, or .gguf with --for)."),
    model: Optional[str] = ModelOpt,
    method: str = MethodOpt,
    layer: Optional[int] = LayerOpt,
    channel: str = ChannelOpt,
    version: Optional[int] = VersionOpt,
    runtime: Optional[str] = typer.Option(
        None,
        "--for",
        help="llama.cpp: write its control-vector GGUF and print "
        "the llama-cli / llama-server flags and the Python lines that load it.",
    ),
    root: Path = RootOpt,
    repo: Optional[str] = RepoOpt,
    rev: Optional[str] = RevOpt,
) -> None:
    """Fetch one vector (from the project or a repo at a revision), verify its sha256, write it to --out."""
    from ..errors import SteerkitError
    from ..fileio import atomic_write_bytes
    from ..vector import SteeringVector

    if runtime not in (None, "llama.cpp"):
        raise SteerkitError(f"unknown runtime {runtime!r}", where="--for", fix="use --for llama.cpp")
    catalog = _open(root, repo, rev)
    entry = catalog.find(
        behavior, model=model, method=_method(method), layer=layer, channel=_channel(channel), version=version
    )
    data = catalog.read_bytes(entry)  # checksum verified
    vec = SteeringVector.from_bytes(data, where=entry.path)  # and it parses
    if runtime is None:
        atomic_write_bytes(out, data)
        console.print(f"[green]✓[/] {out} ({entry.describe()}, sha256 {entry.sha256[:12]} verified)")
        return
    _llamacpp(vec, entry, out)


def _llamacpp(vec: Any, entry: Any, out: Path) -> None:
    """Write the control vector and print how to run it (scale: the largest safe multiplier, else 1)."""
    import warnings

    from ..export import llamacpp_recipe, to_llamacpp_gguf
    from ..models import EMBEDDED_MODELS, embedded_gguf
    from .options import warn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_llamacpp_gguf(vec, out)
    for w in caught:
        warn(str(w.message))
    safe = entry.safe_multiplier_range
    scale = safe[1] if safe and safe[1] > 0 else 1.0
    model_file = embedded_gguf(entry.model) if entry.model in EMBEDDED_MODELS else "MODEL.gguf"
    recipe = llamacpp_recipe(out, vec.layer_ids, scale, model_file)
    console.print(
        f"[green]✓[/] {out} (llama.cpp control vector; {entry.describe()}, sha256 {entry.sha256[:12]} verified)",
        highlight=False,
    )
    console.print(
        f"scale {scale:g} = the largest safe multiplier"
        + (f" {safe}" if safe else " (none recorded: 1)")
        + "; a negative scale steers away",
        highlight=False,
    )
    for name in ("llama-cli", "llama-server"):
        console.print(f"{name}:", recipe[name], highlight=False, soft_wrap=True)
    console.print("python:\n" + recipe["python"], highlight=False, soft_wrap=True, markup=False)
