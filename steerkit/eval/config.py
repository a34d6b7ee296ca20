"""What evaluation can be told: the evaluation, transfer and composition configurations (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import knob

#: where a vector is added (steerkit.vector.POSITIONS, repeated here so that this module stays torch-free)
POSITIONS = ("all", "prompt", "generated")

#: judges of open-ended answers ("none": no open-ended answers are generated)
JUDGES = ("none", "embedding", "refusal", "openai")


@dataclass(frozen=True)
class EvalConfig:
    """How a vector is evaluated on held-out pairs (``steerkit evaluate``, the evaluate stage)."""

    multipliers: tuple[float, ...] = knob(
        (-2.0, -1.0, 0.0, 1.0, 2.0),
        "Multipliers m to measure at (0 is the unsteered model).",
        unique=True,
        flag="--multiplier",
    )
    judge: str = knob(
        "none", "Judge of open-ended answers: none, embedding (offline MiniLM), refusal or openai.", choices=JUDGES
    )
    n_open: int = knob(
        0, "Held-out questions answered freely at each multiplier and judged (needs a judge).", minimum=0
    )
    batch_size: int = knob(8, "Pairs or texts per forward pass.", minimum=1)
    max_new_tokens: int = knob(40, "Tokens per open-ended answer.", minimum=1)
    positions: tuple[str, ...] = knob(
        ("all",),
        "Where the vector is added: all, prompt or generated; the first is "
        "evaluated in full, the others' margins beside it.",
        choices=POSITIONS,
        unique=True,
    )


@dataclass(frozen=True)
class TransferConfig:
    """How a vector's transfer to derived models is measured (``steerkit transfer``, the transfer stage)."""

    multipliers: tuple[float, ...] = knob(
        (-2.0, 2.0), "Multipliers m to measure at (a swing needs only the two ends).", unique=True, flag="--multiplier"
    )
    merged: bool = knob(False, "Also test each LoRA target merged into its weights (a consistency check; slower).")
    batch_size: int = knob(8, "Pairs or texts per forward pass.", minimum=1)


@dataclass(frozen=True)
class ComposeConfig:
    """How two or more vectors applied at once are measured (``steerkit compose``, the compose stage)."""

    multipliers: tuple[float, ...] = knob(
        (-1.0, 1.0),
        "Multipliers of the weighted vectors (a swing needs only the two ends).",
        unique=True,
        flag="--multiplier",
    )
    fluency: bool = knob(False, "Also measure the perplexity of neutral texts for each column (slower).")
    batch_size: int = knob(8, "Pairs or texts per forward pass.", minimum=1)


GATE_METRICS = ("margin_swing", "margin_per_token_swing", "win_swing")


@dataclass(frozen=True)
class GateConfig:
    """When a candidate vector is released: the rules of the release gate (params.yaml's ``gate:``)."""

    metric: str = knob(
        "margin_swing", "The number a candidate is judged by (its swing over the multipliers).", choices=GATE_METRICS
    )
    tolerance: float = knob(
        0.05, "How much worse than the stable release a candidate may be, as a share of stable's number.", minimum=0
    )
    beat_caa: bool = knob(True, "The candidate must beat CAA at the same norm.")
    beat_prompt: str = knob(
        "record",
        "require: the candidate must beat the prompt baseline; record: only record it.",
        choices=("require", "record"),
    )
    max_fluency_cost: float = knob(
        0.10, "The largest fluency cost allowed at m = ±1; it also bounds the safe range.", positive=True
    )
