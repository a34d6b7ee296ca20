"""Deriving a related model: a LoRA fine-tune of a copy of the base model (``peft``).

A vector is checked for transfer on such a model (``steerkit.eval.transfer``). The fine-tune uses a
causal-LM loss on plain texts or on chat-formatted question/answer examples; the caller's model is
never touched (peft wraps a deep copy). How far the result moved from the base is measured by
``steerkit.eval.shift``; saving and loading the adapter folder is ``adapter``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import to_plain
from ..data.pairs import ContrastivePair
from ..data.readers import load_pairs
from ..data.texts import read_lines
from ..errors import DataError, ModelError, TrainingError, option
from ..fileio import sha256_file
from ..forward import last_hidden
from ..models import (
    LoadedModel,
    format_prompt,
    hidden_size,
    model_device,
    model_fingerprint,
    pad_token_id,
)
from ..packing import right_pad
from .config import ANSWERS, LoraConfig

DERIVE_FORMAT = "steerkit.derived"

# Attention projections LoRA adapts by default, per architecture family (first family found wins).
ATTENTION_PROJECTIONS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen2, Gemma, OPT
    ("qkv_proj",),  # Phi-3
    ("c_attn",),  # GPT-2
    ("query_key_value",),  # GPT-NeoX, Bloom, Falcon
    ("Wqkv",),  # MPT-like
)

# A training example: a plain text (loss on every token) or (prompt, completion) (loss on the completion).
Example = str | tuple[str, str]


@dataclass
class DerivedModel:
    """A LoRA-tuned copy of a base model, unmerged (a ``peft`` model), and what deriving it did.

    ``info`` is the content of ``steerkit-derive.json``; its ``shift`` (and ``moved``) are filled in
    by ``steerkit.eval.shift.measure_shift``.
    """

    model: nn.Module  # PeftModel over a private copy of the base weights
    tokenizer: Any
    info: dict[str, Any]
    adapter_dir: Path | None = None

    @property
    def moved(self) -> bool:
        if "moved" not in self.info:
            raise ModelError(
                "the derived model's shift has not been measured",
                fix="call steerkit.eval.shift.measure_shift(derived, base_model) first",
            )
        return bool(self.info["moved"])

    @property
    def shift(self) -> dict[str, Any] | None:
        return self.info.get("shift")

    def merged(self) -> nn.Module:
        """A new model with the adapter merged into (a copy of) the weights; this one stays unmerged."""
        return merged_copy(self.model)

    def loaded(self, name: str = "derived") -> LoadedModel:
        return LoadedModel(model=self.model, tokenizer=self.tokenizer, name=name, source="lora")


def is_peft(model: nn.Module) -> bool:
    return callable(getattr(model, "get_base_model", None)) and hasattr(model, "peft_config")


def merged_copy(model: nn.Module) -> nn.Module:
    """``merge_and_unload`` on a deep copy of a peft model (the given one keeps its adapter, unmerged)."""
    if not is_peft(model):
        raise ModelError(f"{type(model).__name__} is not a peft model; there is nothing to merge")
    merged = copy.deepcopy(model).merge_and_unload()
    merged.eval().requires_grad_(False)
    return merged


def default_target_modules(model: nn.Module) -> list[str]:
    """The attention projections present in ``model`` (q_proj + v_proj where they exist)."""
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for family in ATTENTION_PROJECTIONS:
        if all(n in leaves for n in family):
            return list(family)
    raise ModelError(
        f"no known attention projections in {type(model).__name__} (looked for "
        + ", ".join("+".join(f) for f in ATTENTION_PROJECTIONS)
        + ")",
        fix=f"name the linear layers to adapt ({option('target_modules')})",
    )


# ------------------------------------------------------------------------------------ examples
def training_examples(
    pairs: Sequence[ContrastivePair], tokenizer: Any, answers: str = "both", system: str | None = None
) -> list[tuple[str, str]]:
    """Chat-formatted (prompt, " answer") examples from pairs.

    ``answers``: ``both`` (each question twice, once per answer: moves the model on the domain
    without teaching it either side), ``matching`` or ``not_matching``.
    """
    if answers not in ANSWERS:
        raise DataError(
            f"answers {answers!r} is not one of {', '.join(ANSWERS)}",
            where="answers",
            fix="use both, matching or not_matching",
        )
    out: list[tuple[str, str]] = []
    for p in pairs:
        prompt = format_prompt(tokenizer, p.question, system)
        if answers in ("both", "matching"):
            out.append((prompt, " " + p.matching))
        if answers in ("both", "not_matching"):
            out.append((prompt, " " + p.not_matching))
    return out


def read_training_data(
    paths: Sequence[str | os.PathLike],
    tokenizer: Any,
    answers: str = "both",
    limit: int | None = None,
    system: str | None = None,
) -> tuple[list[Example], list[dict]]:
    """Examples from files: ``.txt`` = one plain text per line; anything else = pairs (see ``load_pairs``).

    Returns the examples and, per file, its path, sha256 and example count (provenance).
    """
    if not paths:
        raise DataError("no training data files given", fix="name at least one file: pairs (JSONL/CSV) or a .txt file")
    examples: list[Example] = []
    files: list[dict] = []
    for path in map(Path, paths):
        if path.suffix == ".txt":
            items: list[Example] = list(read_lines(path, "training texts"))
        else:
            items = list(training_examples(load_pairs(path), tokenizer, answers, system))
        items = items[:limit] if limit else items
        files.append({"file": str(path), "sha256": sha256_file(path), "examples": len(items)})
        examples += items
    return examples, files


def encode_example(tokenizer: Any, ex: Example, max_length: int) -> tuple[list[int], int]:
    """Token ids and the index of the first token that is trained on (predicted)."""
    if isinstance(ex, str):
        ids = list(tokenizer(ex)["input_ids"])
        start = 1
    else:
        prompt, completion = ex
        templated = bool(getattr(tokenizer, "chat_template", None))
        p = list(tokenizer(prompt, add_special_tokens=not templated)["input_ids"])
        c = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        ids, start = p + c, max(1, len(p))
    return ids[:max_length], start


def lm_loss(model: nn.Module, seqs: Sequence[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the trained positions (from ``start`` on) of right-padded sequences."""
    ids, mask = right_pad([s for s, _ in seqs], pad_id)
    device = model_device(model)
    ids, mask = ids.to(device), mask.to(device)
    labels = ids.clone()
    labels[mask == 0] = -100
    for b, (_, start) in enumerate(seqs):
        labels[b, :start] = -100
    hidden = last_hidden(model, ids, mask)
    keep = labels[:, 1:] != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep])


# -------------------------------------------------------------------------------------- training
def derive_lora(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[Example],
    cfg: LoraConfig | None = None,
    *,
    base_name: str | None = None,
    data_files: Sequence[dict] | None = None,
    progress: bool = False,
) -> DerivedModel:
    """Fine-tune a LoRA adapter on a copy of ``model``.

    ``texts``: plain strings (loss on all tokens) or (prompt, completion) tuples (loss on the
    completion only; see :func:`training_examples`). peft's default init (B = 0) makes the adapter
    start as the identity, so ``steps=0`` gives a derived model equal to the base.
    The base model's weights and modules are never modified: peft wraps a deep copy.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    cfg = cfg or LoraConfig()
    if cfg.steps < 0 or not cfg.lr >= 0 or cfg.r < 1 or cfg.batch_size < 1 or cfg.max_length < 2:
        raise TrainingError(
            f"bad LoRA settings: steps={cfg.steps}, lr={cfg.lr}, r={cfg.r}, "
            f"batch_size={cfg.batch_size}, max_length={cfg.max_length}",
            fix="steps >= 0, lr >= 0, r >= 1, batch_size >= 1, max_length >= 2",
        )
    if not texts:
        raise DataError("no training texts", fix="pass texts, pairs or a data file with at least one example")
    modules = list(cfg.target_modules) if cfg.target_modules else default_target_modules(model)
    pad_id = pad_token_id(tokenizer)
    encoded = [encode_example(tokenizer, ex, cfg.max_length) for ex in texts]
    if not any(len(ids) > start for ids, start in encoded):
        raise DataError("no example has a token to train on (all are one token long or empty)")
    work = copy.deepcopy(model)  # the caller's model stays exactly as it was
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=float(cfg.dropout),
        target_modules=modules,
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out="c_attn" in modules,
    )
    with torch.random.fork_rng(devices=[]):  # LoRA A init is random: seeded, without touching global RNG state
        torch.manual_seed(cfg.seed)
        peft_model = get_peft_model(work, peft_cfg)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    log = _fit(peft_model, trainable, encoded, cfg, pad_id, progress)
    peft_model.eval()
    for p in trainable:
        p.requires_grad_(False)
    info: dict[str, Any] = {
        "format": DERIVE_FORMAT,
        "method": "lora",
        "base_model": base_name,
        "base_fingerprint": model_fingerprint(model),
        "hidden_size": hidden_size(model),
        "lora": {
            "r": cfg.r,
            "alpha": cfg.alpha,
            "dropout": float(cfg.dropout),
            "target_modules": modules,
            "init": "B=0 (peft default)",
        },
        "config": to_plain(cfg),
        "train": {
            "steps": cfg.steps,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "batch_size": cfg.batch_size,
            "max_length": cfg.max_length,
            "n_examples": len(texts),
            "data": list(data_files or []),
            "loss_first": log[0] if log else None,
            "loss_last": log[-1] if log else None,
            "loss_last10_mean": sum(log[-10:]) / len(log[-10:]) if log else None,
        },
    }
    return DerivedModel(peft_model, tokenizer, info, None)


def _fit(
    model: nn.Module,
    trainable: list,
    encoded: list[tuple[list[int], int]],
    cfg: LoraConfig,
    pad_id: int,
    progress: bool,
) -> list[float]:
    """AdamW over ``cfg.steps`` batches drawn without replacement (reshuffled each pass); the loss per step."""
    log: list[float] = []
    if not cfg.steps:
        return log
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    order: list[int] = []
    model.train()
    with tqdm(total=cfg.steps, desc="lora", leave=False, disable=None if progress else True) as bar:
        for _ in range(cfg.steps):
            batch: list[tuple[list[int], int]] = []
            while len(batch) < cfg.batch_size:
                if not order:
                    order = torch.randperm(len(encoded), generator=gen).tolist()
                ids, start = encoded[order.pop()]
                if len(ids) > start:
                    batch.append((ids, start))
            loss = lm_loss(model, batch, pad_id)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"LoRA loss became {float(loss)} at step {len(log)}", where="lr", fix="lower the learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            log.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{log[-1]:.3f}")
    return log
