"""The ``steerkit`` command line (Typer): one module per area, each registering its commands here.

Every command is thin over ``steerkit.stages`` (or the library): it turns its options into the
configuration types and calls the same function the pipeline calls.
"""

from __future__ import annotations

import typer

from . import catalog, data, demo, evaluate, pipeline, train, transfer, vector
from .options import fail

app = typer.Typer(
    help="Make, check and ship LLM steering vectors with BiPO.\n\n"
    "Typical order: `data fetch` → `data prepare` → `train` → `evaluate` → `generate`; "
    "or the whole chain: `pipeline run`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.data_app, name="data")
for area in (train, evaluate, vector, demo, transfer, catalog, pipeline):
    area.register(app)


def main() -> None:
    from ..errors import SteerkitError

    try:
        app()
    except SteerkitError as exc:  # raised outside a command (e.g. while Typer converts a value)
        fail(exc)


__all__ = ["app", "main"]
