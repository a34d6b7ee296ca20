"""What training can be told: BiPO's configuration and the LoRA fine-tune's (no torch here).

``BipoConfig`` is THE training configuration: the library, ``steerkit train`` and ``params.yaml``'s
``train:`` sections all use its field names. Its defaults are the official BiPO values (Llama-2-7b,
layer 15 of 32); what a given model starts from is its recipe (``steerkit.recipes``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..config import knob
from ..errors import TrainingError, option, setting


@dataclass(frozen=True)
class BipoConfig:
    """BiPO training parameters (Cao et al. 2024); the defaults are the paper's official ones."""

    layer: int = knob(15, "Decoder layer whose output is steered (0-based).", minimum=0)
    lr: float = knob(5e-4, "AdamW learning rate.", positive=True)
    epochs: int = knob(20, "Passes over the training pairs.", minimum=1)
    warmup_steps: int = knob(100, "Linear warm-up steps before the cosine decay.", minimum=0)
    beta: float = knob(0.1, "BiPO beta: the temperature on the preference margin.", positive=True)
    batch_size: int = knob(4, "Pairs per step (one direction d per step).", minimum=1)
    weight_decay: float = knob(0.05, "AdamW weight decay.", minimum=0)
    seed: int = knob(0, "Seed for the batch order and the directions d.", minimum=0)
    bucket: bool = knob(
        True, "Batch pairs of similar length together (less padding; any engine replays the same plan)."
    )

    def validate(self, n_layers: int) -> None:
        """Raise a TrainingError naming the field when this cannot train a model with ``n_layers`` layers."""
        if not 0 <= self.layer < n_layers:
            raise TrainingError(
                f"layer {self.layer} does not exist; the model has layers 0..{n_layers - 1}",
                where=option("layer"),
                fix=f"pick a middle layer, e.g. {setting('layer', n_layers // 2)}",
            )
        for name in ("beta", "lr"):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                default = BipoConfig.__dataclass_fields__[name].default
                raise TrainingError(
                    f"{name} must be > 0 and finite, got {value}",
                    where=option(name),
                    fix=f"set a positive number, e.g. {setting(name, default)}",
                )
        if self.batch_size < 1 or self.epochs < 1 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise TrainingError(
                f"bad training parameters: {dataclasses.asdict(self)}",
                where="training parameters",
                fix="batch_size and epochs must be >= 1, warmup_steps and weight_decay >= 0",
            )


ANSWERS = ("both", "matching", "not_matching")


@dataclass(frozen=True)
class LoraConfig:
    """A LoRA fine-tune that derives a related model (the target a vector's transfer is checked on)."""

    steps: int = knob(100, "Optimiser steps.", minimum=0)
    lr: float = knob(1e-4, "AdamW learning rate.", positive=True)
    r: int = knob(8, "LoRA rank.", flag="--r", minimum=1)
    alpha: float = knob(16.0, "LoRA alpha (scale = alpha / r).", positive=True)
    dropout: float = knob(0.0, "LoRA dropout.", minimum=0)
    target_modules: tuple[str, ...] | None = knob(
        None, "Module names to adapt (default: q_proj,v_proj or the architecture's attention projections)."
    )
    answers: str = knob(
        "both", "For pairs: train on both answers, the matching ones or the not_matching ones.", choices=ANSWERS
    )
    batch_size: int = knob(4, "Examples per step.", minimum=1)
    max_length: int = knob(256, "Tokens per example (longer ones are cut).", minimum=2)
    seed: int = knob(0, "Seed for the LoRA init and the example order.", minimum=0)
