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
REQUIRE = ("require", "record")


@dataclass(frozen=True)
class GateConfig:
    """When a candidate vector is released: the rules of the release gate (params.yaml's ``gate:``).

    Every rule is a test on a 95 % interval (``steerkit.eval.gate``): promote when all required ones
    pass, hold when one fails, inconclusive when one cannot tell on this many held-out pairs.
    """

    metric: str = knob(
        "margin_swing", "The number a candidate is judged by (its swing over the multipliers).", choices=GATE_METRICS
    )
    min_effect: float = knob(
        0.0,
        "The smallest swing that counts as steering, in the metric's units: the lower end of the candidate's "
        "interval must clear it (and zero).",
        minimum=0,
    )
    tolerance: float = knob(
        0.05,
        "Non-inferiority margin: how much worse than the stable release a candidate may be (paired, lower end "
        "of the interval), as a share of stable's swing or in the metric's units (tolerance_unit).",
        minimum=0,
    )
    tolerance_unit: str = knob(
        "share",
        "share: tolerance is a share of stable's swing; metric: in the metric's units.",
        choices=("share", "metric"),
    )
    beat_caa: bool = knob(True, "The candidate must beat CAA at the same norm (paired difference above zero).")
    beat_prompt: str = knob(
        "record",
        "require: the candidate must beat the prompt baseline (paired difference above zero); record: only record it.",
        choices=REQUIRE,
    )
    max_fluency_cost: float = knob(
        0.10,
        "The largest fluency cost allowed at m = ±1 (the upper end of its interval); it also bounds the safe range.",
        positive=True,
    )
    off_target_rule: str = knob(
        "record",
        "require: the vector's swing on every other behavior's pairs must be at most max_off_target_share of its "
        "own; record: only record it.",
        choices=REQUIRE,
    )
    max_off_target_share: float = knob(
        0.5, "The largest swing on another behavior's pairs, as a share of the vector's own swing.", positive=True
    )
    seed_rule: str = knob(
        "record",
        "require: with train.seeds > 1, the seeds' directions must agree (min_seed_cosine); record: only record it.",
        choices=REQUIRE,
    )
    min_seed_cosine: float = knob(0.9, "The smallest cosine allowed between two seeds' directions.", minimum=-1)
