"""``steerkit catalog …``: build, list, show and fetch vectors from the vector catalog (thin over catalog.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from .cli_errors import fail as _fail
from .errors import SteerkitError

catalog_app = typer.Typer(help="The vector catalog (vectors/catalog.json): build it, list it, fetch vectors from it.",
                          no_args_is_help=True)
console = Console()

RootOpt = typer.Option(Path("."), "--root", help="Project root (holds vectors/ and vectors/catalog.json).")
RepoOpt = typer.Option(None, "--repo", help="Read the catalog from this git/DVC repository (URL or path) instead of --root.")
RevOpt = typer.Option(None, "--rev", help="Git revision (commit, tag, branch) to read with --repo.")
ModelOpt = typer.Option(None, "--model", "-m", help="Model id or folder name (needed when several models have the behavior).")
MethodOpt = typer.Option("bipo", "--method", help="bipo, caa, … ('any' matches every method).")
LayerOpt = typer.Option(None, "--layer", help="Only vectors that steer this layer.")


def _open(root: Path, repo: Optional[str], rev: Optional[str]):
    from .catalog import Catalog

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
def catalog_build(root: Path = RootOpt) -> None:
    """Scan vectors/**/*.safetensors and write vectors/catalog.json (sorted; unchanged tree → same bytes)."""
    from .catalog import catalog_path, rebuild_catalog

    try:
        catalog = rebuild_catalog(root)
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"[green]✓[/] {catalog_path(root)} ({len(catalog)} vector{'s' if len(catalog) != 1 else ''})")


@catalog_app.command("ls")
def catalog_ls(root: Path = RootOpt, repo: Optional[str] = RepoOpt, rev: Optional[str] = RevOpt,
               as_json: bool = typer.Option(False, "--json", help="Print the catalog as JSON.")) -> None:
    """List every catalogued vector."""
    try:
        catalog = _open(root, repo, rev)
    except SteerkitError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(catalog.to_dict(), indent=2, sort_keys=True, default=str))
        return
    table = Table(Column("behavior", overflow="fold"), Column("method", overflow="fold"),
                  Column("model", overflow="fold"), Column("layers", overflow="fold"),
                  Column("safe range", max_width=11), Column("margin swing", max_width=7), Column("sha256", no_wrap=True, min_width=12), box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title=f"{catalog.where} — {len(catalog)} vector{'s' if len(catalog) != 1 else ''}")
    for e in catalog:
        table.add_row(e.behavior, e.method, e.model, ",".join(map(str, e.layers)), _range(e.safe_multiplier_range),
                      _num(e.metrics.get("margin_swing")), e.sha256[:12])
    console.print(table)


@catalog_app.command("show")
def catalog_show(behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
                 model: Optional[str] = ModelOpt, method: str = MethodOpt, layer: Optional[int] = LayerOpt,
                 root: Path = RootOpt, repo: Optional[str] = RepoOpt, rev: Optional[str] = RevOpt,
                 as_json: bool = typer.Option(False, "--json", help="Print the entry as JSON.")) -> None:
    """Show one vector's catalog entry."""
    try:
        entry = _open(root, repo, rev).find(behavior, model=model, method=_method(method), layer=layer)
    except SteerkitError as exc:
        _fail(exc)
    info = entry.to_dict()
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return
    table = Table(Column(no_wrap=True), Column(overflow="fold"), show_header=False)
    for k, v in info.items():
        if k == "metrics":
            for mk, mv in sorted(v.items()):
                table.add_row(f"metrics.{mk}", _num(mv))
        else:
            table.add_row(k, json.dumps(v) if isinstance(v, list) else ("—" if v is None else str(v)))
    console.print(table)


@catalog_app.command("get")
def catalog_get(behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
                out: Path = typer.Option(..., "--out", "-o", help="Where to write the vector file (.safetensors)."),
                model: Optional[str] = ModelOpt, method: str = MethodOpt, layer: Optional[int] = LayerOpt,
                root: Path = RootOpt, repo: Optional[str] = RepoOpt, rev: Optional[str] = RevOpt) -> None:
    """Fetch one vector (from the project or a repo at a revision), verify its sha256, write it to --out."""
    from .fileio import atomic_write_bytes
    from .vector import SteeringVector

    try:
        catalog = _open(root, repo, rev)
        entry = catalog.find(behavior, model=model, method=_method(method), layer=layer)
        data = catalog.read_bytes(entry)  # checksum verified
        SteeringVector.from_bytes(data, where=entry.path)  # and it parses
        try:
            atomic_write_bytes(out, data)
        except OSError as exc:
            raise SteerkitError(f"cannot write the vector ({exc.strerror or exc})", where=str(out),
                                fix="give a writable file path") from None
    except SteerkitError as exc:
        _fail(exc)
    console.print(f"[green]✓[/] {out} ({entry.describe()}, sha256 {entry.sha256[:12]} verified)")
