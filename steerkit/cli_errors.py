"""How every ``steerkit`` command reports a :class:`SteerkitError`: one red line on stderr, exit status 2."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from .errors import SteerkitError

err_console = Console(stderr=True, soft_wrap=True)


def fail(exc: SteerkitError) -> NoReturn:
    """Print the error (what, where, fix) and exit 2; messages quote paths and lists, so no rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(2)
