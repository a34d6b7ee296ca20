"""One error family for everything steerkit refuses to do, in the words of the interface in use.

Every error says what is wrong, where (file, row, key, layer...) and how to fix it, so a
person reading a scheduled run's log can act without opening the code. A fix that names a
setting names it with :func:`option` or :func:`setting`: ``fmt=`` to a Python caller, ``--format``
to a CLI user, ``behaviors.x.data.format`` to someone editing params.yaml (each front door says
which, with :func:`spelled`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_SPELLING: ContextVar[tuple[str, Mapping[str, str]]] = ContextVar("steerkit_option_spelling", default=("python", {}))


def option(name: str) -> str:
    """How the interface in use names the setting ``name``: ``--flag``, a params.yaml key, or ``name=``."""
    kind, names = _SPELLING.get()
    if name in names:
        return names[name] + (" in params.yaml" if kind == "params" else "")
    return f"{name}="


def setting(name: str, example: Any) -> str:
    """The setting ``name`` given the value ``example``, as the user would write it in the interface in use."""
    kind, names = _SPELLING.get()
    if name not in names:
        return f"{name}={example!r}"
    if kind == "params":
        return f"`{names[name]}: {example}` in params.yaml"
    return f"{names[name]} {example}"


@contextmanager
def spelled(names: Mapping[str, str], kind: str = "cli") -> Iterator[None]:
    """Within the block, :func:`option` and :func:`setting` name settings as ``kind`` ("cli" or "params") does."""
    outer_kind, outer = _SPELLING.get()
    token = _SPELLING.set((kind, {**(outer if outer_kind == kind else {}), **names}))
    try:
        yield
    finally:
        _SPELLING.reset(token)


class SteerkitError(Exception):
    """Base class: ``what`` went wrong, ``where`` it happened, and ``fix``."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.what
        if self.where:
            text = f"{self.where}: {text}"
        if self.fix:
            text = f"{text}\n  fix: {self.fix}"
        return text


class DataError(SteerkitError, ValueError):
    """Input data (pairs, sources, params) is malformed or unusable."""


class ChecksumError(DataError):
    """A file's content does not match the checksum it was registered or catalogued with."""


class ModelError(SteerkitError, ValueError):
    """A model spec cannot be resolved or the model has an architecture we cannot steer."""


class VectorError(SteerkitError, ValueError):
    """A steering-vector file is invalid, or a vector does not fit the model it is applied to."""


class TrainingError(SteerkitError, RuntimeError):
    """Training cannot go on (non-finite loss, bad parameters)."""


class JudgeError(SteerkitError, RuntimeError):
    """A judge cannot score (model package missing, judge server unreachable or its reply unusable)."""


class StorageError(SteerkitError, OSError):
    """A file cannot be written (disk full, no permission, a read-only folder); its destination is left as it was.

    Also an ``OSError``, so code that already handles ``OSError`` around a write keeps working.
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        super().__init__(what, where, fix)
        # OSError.__new__ read (what, where, fix) as (errno, strerror, filename); set them to what they mean.
        self.errno, self.strerror, self.filename = None, what, where
