"""The prompt baseline's system prompts: one that asks for a behavior (toward), one against it (away).

Team-written prompts for the seed and the BiPO paper's behaviors ship as package data
(``steerkit/data/prompts.yaml``); any behavior can be given its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from ..errors import DataError, option


@dataclass(frozen=True)
class Prompts:
    """A behavior's two system prompts."""

    toward: str
    away: str


@cache
def builtin() -> dict[str, Prompts]:
    """The shipped prompts by behavior name."""
    raw = yaml.safe_load(resources.files("steerkit.data").joinpath("prompts.yaml").read_text(encoding="utf-8"))
    return {name: Prompts(p["toward"].strip(), p["away"].strip()) for name, p in raw["prompts"].items()}


def prompts_for(behavior: str | None, toward: str | None = None, away: str | None = None) -> Prompts | None:
    """The given prompts, else the shipped ones for ``behavior`` (``bipo-x`` uses ``x``'s), else None.

    Giving only one of the two is an error: the baseline is the difference between them.
    """
    if (toward is None) != (away is None):
        raise DataError(
            "the prompt baseline needs both prompts, toward and away",
            where=option("prompt_toward"),
            fix=f"give both ({option('prompt_toward')} and {option('prompt_away')}), or neither",
        )
    if toward is not None:
        return Prompts(toward, away)
    shipped = builtin()
    name = behavior or ""
    return shipped.get(name) or shipped.get(name.removeprefix("bipo-"))
