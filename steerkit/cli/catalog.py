"""``steerkit catalog build|ls|show|get``: the vector catalog (thin over steerkit.catalog)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Column, Table

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


def _range(r: Optional[list]) -> str:
    return "—" if not r else f"[{r[0]:g}, {r[1]:g}]"


def _num(v: object) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


@catalog_app.command("build")
@command()
def build(root: Path = RootOpt) -> None:
    """Scan vectors/**/*.safetensors and write vectors/catalog.json (sorted; unchanged tree → same bytes)."""
    from ..layout import catalog_path
    from ..stages.catalog import catalog

    built = catalog(root)
    console.print(f"[green]✓[/] {catalog_path(root)} ({len(built)} vector{'s' if len(built) != 1 else ''})")


def listing(catalog: Any, width: int) -> Any:
    """The catalog as a table, or, where its identifiers would not fit ``width`` columns whole, as blocks of lines."""
    rows = [
        (
            e.behavior,
            e.method,
            e.model,
            ",".join(map(str, e.layers)),
            _range(e.safe_multiplier_range),
            _num(e.metrics.get("margin_swing")),
            e.sha256[:12],
        )
        for e in catalog
    ]
    heads = ("behavior", "method", "model", "layers", "safe range", "margin swing", "sha256")
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
        table.add_row(r[0], f"{r[1]} · {r[2]}")
        table.add_row("", f"layers {r[3]} · safe range {r[4]} · margin swing {r[5]} · sha256 {r[6]}")
    return table


@catalog_app.command("ls")
@command()
def ls(
    root: Path = RootOpt,
    repo: Optional[str] = RepoOpt,
    rev: Optional[str] = RevOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the catalog as JSON."),
) -> None:
    """List every catalogued vector."""
    catalog = _open(root, repo, rev)
    if as_json:
        print(json.dumps(catalog.to_dict(), indent=2, sort_keys=True, default=str))
        return
    console.print(listing(catalog, console.width))


@catalog_app.command("show")
@command()
def show(
    behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
    model: Optional[str] = ModelOpt,
    method: str = MethodOpt,
    layer: Optional[int] = LayerOpt,
    root: Path = RootOpt,
    repo: Optional[str] = RepoOpt,
    rev: Optional[str] = RevOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the entry as JSON."),
) -> None:
    """Show one vector's catalog entry."""
    entry = _open(root, repo, rev).find(behavior, model=model, method=_method(method), layer=layer)
    facts = entry.to_dict()
    if as_json:
        print(json.dumps(facts, indent=2, sort_keys=True, default=str))
        return
    table = Table(Column(no_wrap=True), Column(overflow="fold"), show_header=False)
    for k, v in facts.items():
        if k == "metrics":
            for mk, mv in sorted(v.items()):
                table.add_row(f"metrics.{mk}", _num(mv))
        else:
            table.add_row(k, json.dumps(v) if isinstance(v, list) else ("—" if v is None else str(v)))
    console.print(table)


@catalog_app.command("get")
@command()
def get(
    behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the vector file (.safetensors)."),
    model: Optional[str] = ModelOpt,
    method: str = MethodOpt,
    layer: Optional[int] = LayerOpt,
    root: Path = RootOpt,
    repo: Optional[str] = RepoOpt,
    rev: Optional[str] = RevOpt,
) -> None:
    """Fetch one vector (from the project or a repo at a revision), verify its sha256, write it to --out."""
    from ..fileio import atomic_write_bytes
    from ..vector import SteeringVector

    catalog = _open(root, repo, rev)
    entry = catalog.find(behavior, model=model, method=_method(method), layer=layer)
    data = catalog.read_bytes(entry)  # checksum verified
    SteeringVector.from_bytes(data, where=entry.path)  # and it parses
    atomic_write_bytes(out, data)
    console.print(f"[green]✓[/] {out} ({entry.describe()}, sha256 {entry.sha256[:12]} verified)")
