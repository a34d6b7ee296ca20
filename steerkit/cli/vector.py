"""``steerkit vector info|import|import-pt`` and ``steerkit export``: look into, bring in and send out vector files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .options import command, console, warn

vector_app = typer.Typer(help="Inspect and convert steering-vector files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(vector_app, name="vector")
    app.command()(export)


@vector_app.command("info")
@command()
def info(
    path: Path = typer.Argument(..., help="A steerkit vector (.safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metadata as JSON."),
) -> None:
    """Show a vector's layers, norm and metadata."""
    from ..fileio import sha256_file
    from ..vector import SteeringVector

    vec = SteeringVector.load(path)
    facts = {
        "file": str(path),
        "sha256": sha256_file(path),
        "layers": vec.layer_ids,
        "hidden_size": vec.hidden_size,
        "norm": round(vec.norm(), 6),
        "meta": vec.meta,
    }
    if as_json:
        print(json.dumps(facts, indent=2, default=str))
        return
    table = Table(show_header=False)
    for k, v in facts.items():
        if k != "meta":
            table.add_row(k, str(v))
    for k, v in sorted(vec.meta.items()):
        table.add_row(f"meta.{k}", json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    console.print(table)


@vector_app.command("import")
@command()
def import_(
    path: Path = typer.Argument(
        ..., help="A llama.cpp/repeng control vector (.gguf) or an official BiPO vector (.pt)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The steerkit vector to write (.safetensors)."),
    layer: Optional[int] = typer.Option(None, help="For a .pt file: the layer it was trained at."),
    behavior: Optional[str] = typer.Option(None, help="The behavior it steers (recorded in its metadata)."),
    model: Optional[str] = typer.Option(None, help="The model it was made for (recorded in its metadata)."),
    method: Optional[str] = typer.Option(
        None, help="Its method name in the catalog (default: imported for .gguf, bipo for .pt)."
    ),
) -> None:
    """Bring a vector made by another tool into steerkit (its metadata says where it came from).

    Saved at vectors/<model>/<behavior>/L<layer>.<method>.safetensors it is evaluated, gated and
    catalogued like steerkit's own: `steerkit vector import cv.gguf --behavior power-seeking
    --model smollm2-135m-instruct -o vectors/smollm2-135m-instruct/power-seeking/L15.imported.safetensors`.
    """
    from ..errors import VectorError
    from ..export import from_llamacpp_gguf
    from ..vector import SteeringVector

    meta = {k: v for k, v in (("behavior", behavior), ("model", model), ("method", method)) if v}
    if path.suffix == ".gguf":
        vec = from_llamacpp_gguf(path, **meta)
    elif layer is None:
        raise VectorError("a .pt vector does not say its layer", where=str(path), fix="pass --layer N")
    else:
        vec = SteeringVector.from_bipo_pt(path, layer, **{"behavior": "unknown", "model": "unknown", **meta})
    vec.save(out)
    console.print(f"[green]✓[/] {out} (layers {vec.layer_ids}, |v| = {vec.norm():.3f}, from {path.name})")


@vector_app.command("import-pt")
@command()
def import_pt(
    path: Path = typer.Argument(..., help="An official BiPO vector (.pt, a bare tensor)."),
    layer: int = typer.Option(..., help="Layer the official vector was trained at."),
    out: Path = typer.Option(..., "--out", "-o"),
    behavior: str = typer.Option("unknown"),
    model: str = typer.Option("unknown"),
) -> None:
    """Convert an official BiPO .pt vector (loaded weights-only, never unpickled) to safetensors."""
    from ..vector import SteeringVector

    vec = SteeringVector.from_bipo_pt(path, layer, behavior=behavior, model=model)
    vec.save(out)
    console.print(f"[green]✓[/] {out} (layer {layer}, |v| = {vec.norm():.3f})")


@command()
def export(
    vector: Path = typer.Argument(..., help="A steerkit vector (.safetensors)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .gguf path."),
    multiplier: str = typer.Option("1", "--multiplier", "-x", help="Baked-in scale (llama.cpp can rescale too)."),
    fmt: str = typer.Option("llamacpp", "--format", help="Target runtime; llamacpp = control-vector GGUF."),
) -> None:
    """Export a vector for llama.cpp: `llama-cli --control-vector OUT.gguf` (or --control-vector-scaled)."""
    from ..config import as_float
    from ..errors import SteerkitError
    from ..export import to_llamacpp_gguf
    from ..vector import SteeringVector

    if fmt != "llamacpp":
        raise SteerkitError(f"unknown export format {fmt!r}", where="--format", fix="use --format llamacpp")
    vec = SteeringVector.load(vector)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = to_llamacpp_gguf(vec, out, multiplier=as_float(multiplier))
    for w in caught:
        warn(str(w.message))
    console.print(f"[green]✓[/] {path} (llama.cpp control vector, layers {vec.layer_ids})")
