"""What each stage takes besides its configuration type: which data, how much of it, which extra files.

These are knobs like the configurations' (one place each, with their help): ``params.yaml``
sections and the CLI's options are checked against them. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import knob
from ..data.readers import PAIR_FORMATS
from ..synth.config import GenerateConfig

BASELINES = ("caa", "none")
METHODS = ("bipo", "caa")


def _limit(what: str) -> int | None:
    return knob(None, f"Use only the first N {what} (all when not given).", minimum=1)


@dataclass(frozen=True)
class DataSpec:
    """A behavior's data: its training file, its held-out file and their format (``params.yaml``'s ``data:``);
    or, with ``generate``, the pairs a teacher writes from a description (the generate stage)."""

    train: str = knob("", "The training pairs file (any format steerkit reads).")
    test: str = knob("", "The held-out pairs file: the test split, never trained on.")
    format: str = knob("auto", "The files' format (auto sniffs it).", choices=PAIR_FORMATS)
    columns: str | None = knob(
        None,
        "For any other table: which columns hold the pair, e.g. question=prompt,matching=chosen,not_matching=rejected.",
    )
    generate: GenerateConfig | None = knob(
        None, "Pairs a teacher writes from a description (instead of files): the generate stage's settings."
    )


@dataclass(frozen=True)
class TrainOptions:
    """What the train stage trains on and beside BiPO (``params.yaml``'s ``train:`` keys besides BipoConfig's)."""

    limit: int | None = _limit("training pairs")
    seeds: int = knob(
        1,
        "Train BiPO with this many seeds (seed, seed + 1, …) in one pass; the evaluation reports how much "
        "their directions and swings agree, and the medoid seed ships. 1: one seed (no extra cost).",
        minimum=1,
    )
    baseline: str = knob(
        "caa",
        "Also train a CAA vector at the same layer (the evaluation compares it at BiPO's norm); none skips it.",
        choices=BASELINES,
    )


@dataclass(frozen=True)
class EvaluateOptions:
    """What the evaluate stage reads besides the vector and its test pairs."""

    limit: int | None = _limit("test pairs")
    texts: str | None = knob(None, "Neutral texts for the fluency cost, one per line (default: steerkit's own).")
    prompt_toward: str | None = knob(
        None,
        "System prompt asking for the behavior: the prompt baseline (default: "
        "steerkit's own for the behavior, if it has one).",
    )
    prompt_away: str | None = knob(None, "System prompt asking to avoid the behavior (given with prompt_toward).")


@dataclass(frozen=True)
class DeriveOptions:
    """What the derive stage trains on (besides LoraConfig's knobs)."""

    limit: int | None = _limit("examples of each file")
    probe_texts: str | None = knob(None, "Texts measuring how far the model moved (default: steerkit's neutral texts).")


@dataclass(frozen=True)
class TransferOptions:
    """What the transfer stage reads besides the vector, its targets and its test pairs."""

    limit: int | None = _limit("test pairs")
    probe_texts: str | None = knob(None, "Texts for the model-shift check (default: steerkit's neutral texts).")


@dataclass(frozen=True)
class ComposeOptions:
    """What the compose stage reads besides the vectors and the behaviors' test pairs."""

    limit: int | None = _limit("test pairs per behavior")
    probe_texts: str | None = knob(None, "Texts for the fluency check (default: steerkit's neutral texts).")
