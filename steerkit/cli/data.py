"""``steerkit data fetch|prepare|generate``: registered public datasets, a behavior's validated, split pairs,
and pairs a teacher writes from a description."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..config import help_of
from ..data.readers import PAIR_FORMATS
from ..synth.config import GenerateConfig
from .options import DeviceOpt, DtypeOpt, ModelOpt, command, config_from, console, knob_option, not_a_pipeline_output

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


@data_app.command("generate")
@command()
def generate(
    ctx: typer.Context,
    behavior: str = typer.Argument(..., help="Behavior name, e.g. pirate (it names the pairs' ids)."),
    describe: str = typer.Option(..., "--describe", help=help_of(GenerateConfig, "describe")),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="The pairs file to write (JSONL; its provenance goes beside it).",
        show_default="data/generated/<behavior>.jsonl",
    ),
    out_dir: Optional[Path] = typer.Option(
        None,
        "--out-dir",
        help="Instead: a folder for train.jsonl, test.jsonl (split by question) and generation.json, as the "
        "pipeline's generate stage writes them.",
    ),
    pairs: Optional[int] = knob_option(GenerateConfig, "pairs"),
    toward: Optional[str] = knob_option(GenerateConfig, "toward"),
    away: Optional[str] = knob_option(GenerateConfig, "away"),
    questions: Optional[str] = knob_option(GenerateConfig, "questions"),
    teacher: Optional[str] = knob_option(GenerateConfig, "teacher"),
    seed: Optional[int] = knob_option(GenerateConfig, "seed"),
    temperature: Optional[float] = knob_option(GenerateConfig, "temperature"),
    max_new_tokens: Optional[int] = knob_option(GenerateConfig, "max_new_tokens"),
    test_fraction: Optional[float] = knob_option(GenerateConfig, "test_fraction"),
    judge: Optional[bool] = knob_option(GenerateConfig, "judge"),
    concurrency: Optional[int] = knob_option(GenerateConfig, "concurrency"),
    model: str = ModelOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
) -> None:
    """Write contrastive pairs for a behavior described in words: a teacher (the model itself, offline, unless
    --teacher openai) writes the prompts, the questions and both answers; what cannot teach is dropped and
    counted. `steerkit data prepare BEHAVIOR FILE` then splits it like any dataset."""
    from rich.table import Table

    from ..errors import SteerkitError
    from ..stages.generate import generate as generate_split
    from ..stages.generate import generate_file

    cfg = config_from(GenerateConfig(describe=describe), ctx.params)
    kw = {"model": model, "cfg": cfg, "log": console.print, "device": device, "dtype": dtype}
    if out is not None and out_dir is not None:
        raise SteerkitError("give --out or --out-dir, not both", where="--out-dir", fix="a pairs file, or a folder")
    if out_dir is not None:
        res = generate_split(behavior, out_dir, **kw)
    else:
        res = generate_file(behavior, out or Path("data") / "generated" / f"{behavior}.jsonl", **kw)
    prov = res.generated.provenance
    table = Table(show_header=False, title=f"{behavior}: {prov['description']}")
    table.add_row("teacher", ", ".join(f"{k} {v}" for k, v in prov["teacher"].items()))
    table.add_row("toward", prov["prompts"]["toward"])
    table.add_row("away", prov["prompts"]["away"])
    table.add_row("prompts written by", prov["prompts"]["written_by"])
    table.add_row("questions", f"{prov['questions']['kept']} kept of {prov['questions']['asked']} asked")
    table.add_row("pairs", f"{prov['pairs']['kept']} kept (asked for {prov['pairs']['asked_for']})")
    table.add_row("dropped", ", ".join(f"{k}: {v}" for k, v in prov["dropped"].items()) or "none")
    console.print(table)
    for path in res.files:
        console.print(f"[green]✓[/] {path}", highlight=False)
