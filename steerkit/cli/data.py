"""``steerkit data fetch|prepare``: registered public datasets, and a behavior's validated, split pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data.readers import PAIR_FORMATS
from .options import command, console, not_a_pipeline_output

data_app = typer.Typer(help="Fetch registered datasets and prepare contrastive pairs.", no_args_is_help=True)


@data_app.command("fetch")
@command()
def fetch(
    names: list[str] = typer.Argument(..., help="Source or group names from data/sources.yaml, e.g. bipo."),
    dest: Path = typer.Option(Path("data/raw"), help="Folder to fetch into."),
    registry: Path = typer.Option(Path("data/sources.yaml"), help="The source registry."),
    force: bool = typer.Option(False, help="Fetch again even if a verified copy exists."),
) -> None:
    """Fetch registered datasets, verifying each sha256 (uses $STEERKIT_DATA_MIRROR when set)."""
    from ..data.sources import fetch_many

    for p in fetch_many(names, dest_root=dest, force=force, registry_path=registry):
        console.print(f"[green]✓[/] {p}")


@data_app.command("prepare")
@command(extra={"mapping": "--columns"})
def prepare(
    behavior: str = typer.Argument(..., help="Behavior name, e.g. power-seeking."),
    inputs: list[Path] = typer.Argument(..., help="Data files (BiPO CSV, Anthropic JSONL, CAA JSON, …)."),
    test_inputs: list[Path] = typer.Option(
        [], "--test", help="Files to use as the test split instead of a random split."
    ),
    fmt: str = typer.Option("auto", "--format", help="Input format: " + ", ".join(PAIR_FORMATS) + " (auto sniffs it)."),
    columns: Optional[str] = typer.Option(
        None,
        "--columns",
        help="For any other table (CSV, JSONL, JSON): which of its "
        "columns hold the pair, e.g. question=prompt,matching=chosen,not_matching=rejected.",
    ),
    test_fraction: float = typer.Option(0.2, help="Share of questions held out when no --test is given."),
    seed: int = typer.Option(0, help="Split seed."),
    root: Optional[Path] = typer.Option(
        None,
        help="Project root (writes data/pairs/<behavior>/; default: here, unless the pipeline owns that behavior).",
        show_default=".",
    ),
) -> None:
    """Validate and split a behavior's data into data/pairs/<behavior>/{train,test}.jsonl."""
    from ..data.readers import parse_mapping
    from ..layout import pairs_file
    from ..stages import prepare as prepare_stage

    if root is None:  # the default: refused where the project's pipeline prepares this behavior
        root = Path(".")
        not_a_pipeline_output(pairs_file(root, behavior, "train"), root, "--root")

    mapping = parse_mapping(columns) if columns else None
    res = prepare_stage.prepare(
        behavior, inputs, root, fmt, test_fraction, seed, test_inputs=test_inputs, mapping=mapping
    )
    console.print(
        f"{behavior}: {res.n_train} train, {res.n_test} test pairs → {res.train.parent}  (dropped: {res.dropped})"
    )
