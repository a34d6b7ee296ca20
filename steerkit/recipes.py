"""What works per model: the defaults every front door starts from (one table).

The official BiPO values (lr 5e-4, 20 epochs, 100 warm-up steps, β 0.1, batch 4: ``BipoConfig``'s
defaults) were tuned for 7B models at layer 15 of 32; for another depth the layer keeps that
proportion. The embedded SmolLM2-135M-Instruct needs a larger learning rate for its short runs:
RESULTS.md (win-swing study) found lr 5e-3, 10 epochs, warm-up 10 at layer 15 of 30 steer it
(BiPO 3.5x CAA's margin swing on power-seeking), where the official lr barely moves it.

``steerkit train``, the Python API and ``params.yaml`` all start from ``recipe_for(model)``; a
vector's metadata records the recipe and what was overridden.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .config import differences
from .models import EMBEDDED_DEFAULT
from .train.config import BipoConfig, LoraConfig

OFFICIAL = "bipo-official"
#: BiPO steers Llama-2-7b-chat at layer 15 of its 32
OFFICIAL_DEPTH = (15, 32)


@dataclass(frozen=True)
class Recipe:
    """The defaults for one model: BiPO training and the LoRA derive (the transfer target), and why."""

    name: str
    train: BipoConfig
    derive: LoraConfig
    evidence: str

    def overrides(self, cfg: BipoConfig) -> dict:
        """What ``cfg`` changes relative to this recipe (recorded in a vector's metadata)."""
        return differences(cfg, self.train)


RECIPES: dict[str, Recipe] = {
    EMBEDDED_DEFAULT: Recipe(
        name=EMBEDDED_DEFAULT,
        train=BipoConfig(layer=15, lr=5e-3, epochs=10, warmup_steps=10),
        derive=LoraConfig(steps=6, lr=2e-3, batch_size=2, max_length=96),
        evidence="RESULTS.md: lr 5e-3, 10 epochs, warm-up 10 at layer 15 of 30 (the official lr 5e-4 barely "
        "moves it in short runs); 6 LoRA steps at lr 2e-3 move it measurably (the derive report)",
    ),
}


def official_layer(n_layers: int) -> int:
    """The official recipe's layer for a model of ``n_layers`` decoder layers (15 of 32, in proportion)."""
    num, den = OFFICIAL_DEPTH
    return max(1, min(n_layers - 1, round(n_layers * num / den)))


def official(n_layers: int | None = None) -> Recipe:
    """The BiPO paper's values; the layer in proportion to ``n_layers`` when it is known."""
    train = BipoConfig() if n_layers is None else BipoConfig(layer=official_layer(n_layers))
    return Recipe(
        OFFICIAL,
        train,
        LoraConfig(),
        "BiPO's official values for Llama-2-7b (layer 15 of 32), layer scaled to the model's depth",
    )


def recipe_for(model: str, n_layers: int | None = None) -> Recipe:
    """The recipe for a model spec: its own when the table has one, else the official values.

    ``n_layers`` places the official layer; without it, a local folder's ``config.json`` is read.
    """
    key = model.strip().lower()
    if key in RECIPES:
        return RECIPES[key]
    return official(n_layers if n_layers is not None else local_depth(model))


def local_depth(model: str) -> int | None:
    """``num_hidden_layers`` (or ``n_layer``) of a local model folder's config.json, without loading it."""
    config = Path(model).expanduser() / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = data.get("text_config") if isinstance(data.get("text_config"), dict) else data
    depth = text.get("num_hidden_layers", text.get("n_layer"))
    return depth if isinstance(depth, int) and depth > 0 else None


def with_layer(recipe: Recipe, layer: int) -> Recipe:
    """The recipe with another training layer (what a calibration or a user's --layer picks)."""
    return replace(recipe, train=replace(recipe.train, layer=layer))
