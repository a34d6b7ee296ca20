"""One error family for everything steerkit refuses to do.

Every error says what is wrong, where (file, row, key, layer...) and how to fix it, so a
person reading a scheduled run's log can act without opening the code.
"""

from __future__ import annotations


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
