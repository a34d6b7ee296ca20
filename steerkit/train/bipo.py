"""BiPO: bi-directional preference optimisation of a steering vector (Cao et al. 2024).

A vector v is added, times a direction d ∈ {−1, +1} drawn per batch, to the output of decoder
layer L at every position. For a pair (q, r⁺, r⁻)::

    loss = −log σ( β · d · [ (log p_dv(r⁺|q) − log p_0(r⁺|q)) − (log p_dv(r⁻|q) − log p_0(r⁻|q)) ] )

This module is the training loop (plan, loss, AdamW with warm-up + cosine decay, checkpoints,
progress); the log-probabilities come from an engine (``engines``), the checkpoint format from
``checkpoint`` and the parameters from ``BipoConfig`` (``config``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TrainingError
from ..fileio import atomic_write_bytes, atomic_write_text, sha256_bytes
from ..models import decoder_layers, hidden_size, model_device, stable_attention
from ..packing import EncodedPair
from ..vector import SteeringVector, model_meta
from .checkpoint import checkpoint_bytes, load_checkpoint
from .config import BipoConfig
from .engines import make_engine

__all__ = ["BipoConfig", "Step", "TrainResult", "dpo_loss", "make_plan", "pairs_checksum", "train", "write_log_csv"]


def pairs_checksum(pairs: Sequence[EncodedPair]) -> str:
    """sha256 of the encoded pairs: a checkpoint resumes only on the very same data."""
    return sha256_bytes(json.dumps([[p.prompt, p.matching, p.not_matching] for p in pairs]).encode())


@dataclass(frozen=True)
class Step:
    """One optimiser step: which pairs, which direction d, which epoch."""

    indices: tuple[int, ...]
    direction: int  # +1 or -1
    epoch: int


def make_plan(lengths: Sequence[int], cfg: BipoConfig) -> list[Step]:
    """The whole run's batches and directions, fixed by the seed so any engine or resume replays it."""
    rng = random.Random(cfg.seed)
    n = len(lengths)
    steps: list[Step] = []
    for epoch in range(cfg.epochs):
        order = list(range(n))
        rng.shuffle(order)
        if cfg.bucket:  # sort within windows of 32 batches, then shuffle the batches
            window = 32 * cfg.batch_size
            order = [i for s in range(0, n, window) for i in sorted(order[s : s + window], key=lambda j: lengths[j])]
        batches = [tuple(order[s : s + cfg.batch_size]) for s in range(0, n, cfg.batch_size)]
        if cfg.bucket:
            rng.shuffle(batches)
        steps += [Step(b, rng.choice((-1, 1)), epoch) for b in batches]
    return steps


def dpo_loss(
    beta: float, direction: int, pos: torch.Tensor, neg: torch.Tensor, ref_pos: torch.Tensor, ref_neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BiPO loss (mean over the batch) and the per-pair reward margins d·[(Δ⁺) − (Δ⁻)]."""
    margin = direction * ((pos - ref_pos) - (neg - ref_neg))
    return -F.logsigmoid(beta * margin).mean(), margin.detach()


@dataclass
class TrainResult:
    """The trained vector (metadata included), the per-step log and the wall time."""

    vector: SteeringVector
    log: list[dict[str, float]]
    seconds: float


def train(
    model: nn.Module,
    pairs: Sequence[EncodedPair],
    cfg: BipoConfig,
    pad_id: int,
    *,
    engine: str = "fast",
    model_name: str = "?",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    extra_meta: dict[str, Any] | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train one BiPO vector. ``checkpoint`` is written each epoch; ``resume`` continues from it."""
    with stable_attention(model):
        return _train(
            model,
            pairs,
            cfg,
            pad_id,
            engine=engine,
            model_name=model_name,
            checkpoint=checkpoint,
            resume=resume,
            progress=progress,
            stop_after=stop_after,
            extra_meta=extra_meta,
            on_step=on_step,
        )


def _train(
    model: nn.Module,
    pairs: Sequence[EncodedPair],
    cfg: BipoConfig,
    pad_id: int,
    *,
    engine: str,
    model_name: str,
    checkpoint: str | Path | None,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    extra_meta: dict[str, Any] | None,
    on_step: Callable[[int, dict], None] | None,
) -> TrainResult:
    t0 = time.perf_counter()
    cfg.validate(len(decoder_layers(model)))
    if not pairs:
        raise TrainingError("no training pairs", fix="check the data: 0 pairs survived validation")
    device = model_device(model)
    data_sha = pairs_checksum(pairs)
    torch.manual_seed(cfg.seed)
    eng = make_engine(engine, model, pairs, cfg.layer, pad_id)

    from transformers import get_cosine_schedule_with_warmup

    v = torch.zeros(hidden_size(model), dtype=torch.float32, device=device, requires_grad=True)
    opt = torch.optim.AdamW([v], lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = make_plan([p.packed_length for p in pairs], cfg)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, len(plan))
    log: list[dict[str, float]] = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if resume and ckpt is not None and ckpt.exists():
        tensors, meta = load_checkpoint(ckpt, cfg, data_sha)
        start = int(meta["step"])
        with torch.no_grad():
            v.copy_(tensors["v"].to(device))
        if "exp_avg" in tensors:
            opt.state[v] = {
                "step": torch.tensor(float(meta["adam_step"])),
                "exp_avg": tensors["exp_avg"].to(device),
                "exp_avg_sq": tensors["exp_avg_sq"].to(device),
            }
        with warnings.catch_warnings():  # replaying the schedule without optimizer steps is intended
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start):
                sched.step()
        log = json.loads(meta["log"])

    bar = _progress(len(plan), start, progress)
    last_good = (start, [dict(r) for r in log])
    try:
        for step_i in range(start, len(plan)):
            step = plan[step_i]
            ref_pos, ref_neg = eng.ref_logps(step.indices)
            pos, neg = eng.logps(step.indices, step.direction * v)
            loss, margin = dpo_loss(cfg.beta, step.direction, pos, neg, ref_pos.to(pos), ref_neg.to(neg))
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {float(loss.detach())} at step {step_i} (epoch {step.epoch})",
                    where=str(ckpt) if ckpt else None,
                    fix=f"lower the learning rate (now {cfg.lr}); "
                    f"the last good checkpoint (step {last_good[0]}) is kept",
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            row = {
                "step": step_i + 1,
                "epoch": step.epoch,
                "direction": step.direction,
                "loss": float(loss.detach()),
                "reward_acc": float((margin > 0).float().mean()),
                "margin": float(margin.mean()),
                "lr": float(sched.get_last_lr()[0]),
                "norm": float(v.detach().norm()),
            }
            log.append(row)
            if on_step:
                on_step(step_i + 1, row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['reward_acc']:.2f}", norm=f"{row['norm']:.3f}")
            epoch_done = step_i + 1 == len(plan) or plan[step_i + 1].epoch != step.epoch
            if epoch_done and ckpt is not None:
                atomic_write_bytes(ckpt, checkpoint_bytes(v, opt, step_i + 1, log, cfg, data_sha))
                last_good = (step_i + 1, [dict(r) for r in log])
            if stop_after is not None and step_i + 1 >= stop_after:
                break
    finally:
        bar.close()
    meta = {
        **model_meta(model, model_name),
        "method": "bipo",
        "layer": cfg.layer,
        "engine": engine,
        "training": dataclasses.asdict(cfg),
        "steps": len(log),
        "n_pairs": len(pairs),
        "pairs_sha256": data_sha,
        "final_loss": log[-1]["loss"] if log else None,
        "final_reward_acc": log[-1]["reward_acc"] if log else None,
        "seconds": round(time.perf_counter() - t0, 2),
        **(extra_meta or {}),
    }
    vector = SteeringVector({cfg.layer: v.detach()}, meta)
    return TrainResult(vector, log, time.perf_counter() - t0)


def _progress(total: int, start: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=start, desc="BiPO", unit="step", disable=None if enabled else True, dynamic_ncols=True
    )


def write_log_csv(path: str | Path, log: list[dict[str, float]]) -> None:
    """The per-step training log as CSV (atomic)."""
    buf = io.StringIO()
    if log:
        writer = csv.DictWriter(buf, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)
    atomic_write_text(path, buf.getvalue())
