"""What every ``steerkit`` command shares: options declared from the configuration types, the shared
options (model, device, root...), and one way to report an error (one red line, exit status 2).

An option of a configuration knob defaults to "not given" (None); the command starts from the
configuration the library would use (the model's recipe for training, the type's defaults
elsewhere) and replaces what was given (:func:`config_from`). ``--help`` shows the default that
will really be used. Inside a command, errors name its options (``--format``, not ``fmt=``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..config import (
    as_float,
    choices_of,
    default_of,
    flag,
    help_of,
    knob_names,
    types_of,
)
from ..errors import SteerkitError, spelled
from ..models import EMBEDDED_DEFAULT

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(exc: SteerkitError) -> NoReturn:
    """Print the error (what, where, fix) and exit 2; messages quote paths and lists, so no rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(2)


def warn(text: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False)


def spellings(command: Any) -> dict[str, str]:
    """Each parameter of a command as its user writes it: an option's long flag, an argument's NAME."""
    out = {}
    for p in command.params:
        if p.param_type_name == "option" and p.opts:
            out[p.name] = max(p.opts, key=len)
        elif p.param_type_name == "argument":
            out[p.name] = (getattr(p, "metavar", None) or p.name).upper()
    return out


def command(extra: dict[str, str] | None = None) -> Callable[[F], F]:
    """Run a command with its errors in its own words (its flags) and reported by :func:`fail`.

    ``extra`` spells library settings the command exposes under another name (e.g. mapping → --columns).
    The command receives Typer's context when it declares ``ctx``; otherwise it is passed to the
    wrapper only.
    """

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)
        wants_ctx = "ctx" in sig.parameters

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            ctx = kwargs["ctx"] if wants_ctx else kwargs.pop("cli_context")
            names = {**spellings(ctx.command), **(extra or {})}
            try:
                with spelled(names):
                    return fn(*args, **kwargs)
            except SteerkitError as exc:
                fail(exc)

        if not wants_ctx:  # ask Typer for the context under a name the command does not see
            extra_param = inspect.Parameter("cli_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            run.__signature__ = sig.replace(parameters=[*sig.parameters.values(), extra_param])  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return wrap


# ---------------------------------------------------------------------- options from knobs
def knob_option(cls: type, name: str, *short: str, default: str | None = None) -> Any:
    """A typer option for the knob ``cls.name`` (its flag, help and allowed values); None when not given.

    ``default`` is the text ``--help`` shows (default: the field's default value).
    """
    kind = types_of(cls)[name]
    choices = choices_of(cls, name)
    text = help_of(cls, name) + (f" One of: {', '.join(choices)}." if choices else "")
    shown = default if default is not None else _show(default_of(cls, name))
    flag_ = flag(cls, name)
    if kind is bool:
        return typer.Option(None, f"{flag_}/--no-{flag_[2:]}", *short, help=text, show_default=shown)
    return typer.Option(
        None, flag_, *short, help=text + (" Repeatable." if "tuple" in str(kind) else ""), show_default=shown
    )


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def recipe_default(cls: type, name: str, embedded: Any, official: Any) -> str:
    """The --help default of a knob that comes from the model's recipe."""
    return f"from the model's recipe: {EMBEDDED_DEFAULT} {_show(embedded)}, other models {_show(official)}"


def config_from(base: Any, given: dict[str, Any]) -> Any:
    """``base`` (a configuration) with the options the user gave (not None) in ``given`` replaced."""
    import dataclasses

    hints = types_of(type(base))
    values = {}
    for name in knob_names(type(base)):
        value = given.get(name)
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        kind = str(hints[name])
        if "tuple[float" in kind:
            value = tuple(as_float(v, flag(type(base), name)) for v in value)
        elif "tuple[str" in kind:
            value = tuple(value)
        values[name] = value
    cfg = dataclasses.replace(base, **values)
    from ..config import problems

    for name, what in problems(cfg):
        raise SteerkitError(what, where=flag(type(base), name))
    return cfg


def floats(values: list[str] | tuple[str, ...], key: str) -> list[float]:
    return [as_float(v, key) for v in values]


# ---------------------------------------------------------------------------- shared options
def behavior_files(items: list[str] | None, flag_name: str) -> dict[str, Path]:
    """``BEHAVIOR=FILE`` values of a repeatable option → {behavior: path}."""
    from ..errors import DataError

    out: dict[str, Path] = {}
    for item in items or []:
        b, sep, path = str(item).partition("=")
        if not sep or not b.strip() or not path.strip():
            raise DataError(
                f"{item!r} is not BEHAVIOR=FILE",
                where=flag_name,
                fix=f"e.g. {flag_name} power-seeking=data/pairs/power-seeking/test.jsonl",
            )
        if b.strip() in out:
            raise DataError(f"behavior {b.strip()!r} is given twice", where=flag_name)
        out[b.strip()] = Path(path.strip())
    return out


def not_a_pipeline_output(path: Path, root: Path, option_name: str) -> Path:
    """``path`` (a default a command chose, not one the user gave) unless the project's pipeline owns it.

    A command run by hand in a project must not write over what a DVC stage made and the gate judged
    (``dvc status`` would go stale, the catalog would index the wrong file): it refuses, naming the stage.
    """
    from ..errors import DataError
    from ..pipeline.graph import owner_of

    stage = owner_of(path, root)
    if stage is not None:
        raise DataError(
            f"{path} is an output of the pipeline's {stage} stage (DVC-tracked); writing it by hand would leave "
            "`dvc status` stale and the catalog indexing this file instead of the pipeline's",
            where=option_name,
            fix=f"give {option_name} a path outside the pipeline's outputs (e.g. under scratch/), or run the stage: "
            f"`steerkit pipeline stage {stage.replace('@', ' ')}`",
        )
    return path


ModelOpt = typer.Option(EMBEDDED_DEFAULT, "--model", "-m", help="Embedded name, local folder, .gguf file or hub id.")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1 … (default: cuda if present).")
DtypeOpt = typer.Option(None, "--dtype", help="fp32, bf16 (default: bf16 on CUDA, fp32 on CPU).")
RootOpt = typer.Option(Path("."), "--root", help="Project root (holds data/, vectors/, reports/).")
