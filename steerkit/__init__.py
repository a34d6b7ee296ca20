"""steerkit: make, check and ship LLM steering vectors with BiPO.

The public names below are imported on first use (``import steerkit`` stays light; torch loads
when a name that needs it is touched)::

    from steerkit import SteeringVector, load_model, steered_generations, Catalog, BipoConfig, recipe_for
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    # the ground floor
    "SteeringVector": "steerkit.vector",
    "weighted_sum": "steerkit.vector",
    "load_model": "steerkit.models",
    "LoadedModel": "steerkit.models",
    "steered_generations": "steerkit.generate",
    "to_llamacpp_gguf": "steerkit.export",
    "from_llamacpp_gguf": "steerkit.export",
    "SteerkitError": "steerkit.errors",
    "DataError": "steerkit.errors",
    "ModelError": "steerkit.errors",
    "VectorError": "steerkit.errors",
    "TrainingError": "steerkit.errors",
    "ChecksumError": "steerkit.errors",
    # data
    "ContrastivePair": "steerkit.data.pairs",
    "read_pairs": "steerkit.data.readers",
    "load_pairs": "steerkit.data.readers",
    # configuration and recipes
    "BipoConfig": "steerkit.train.config",
    "LoraConfig": "steerkit.train.config",
    "EvalConfig": "steerkit.eval.config",
    "TransferConfig": "steerkit.eval.config",
    "ComposeConfig": "steerkit.eval.config",
    "Recipe": "steerkit.recipes",
    "recipe_for": "steerkit.recipes",
    # training and evaluation
    "train_caa": "steerkit.train.caa",
    "evaluate_vector": "steerkit.eval.report",
    # the catalog
    "Catalog": "steerkit.catalog.index",
    "CatalogEntry": "steerkit.catalog.index",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'steerkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
