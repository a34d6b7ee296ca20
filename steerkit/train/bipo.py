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
from .engines import fast_logps, make_engine

__all__ = [
    "BipoConfig",
    "Job",
    "Step",
    "TrainResult",
    "dpo_loss",
    "make_plan",
    "pairs_checksum",
    "train",
    "train_many",
    "write_log_csv",
]


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


@dataclass
class Job:
    """One vector to train: its pairs and configuration (and, optionally, its checkpoint file)."""

    pairs: Sequence[EncodedPair]
    cfg: BipoConfig
    extra_meta: dict[str, Any] | None = None
    checkpoint: str | Path | None = None
    resume: bool = False
    stop_after: int | None = None


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
    job = Job(pairs, cfg, extra_meta, checkpoint, resume, stop_after)
    hook = (lambda _k, i, row: on_step(i, row)) if on_step else None
    (result,) = train_many(model, [job], pad_id, engine=engine, model_name=model_name, progress=progress, on_step=hook)
    return result


def train_many(
    model: nn.Module,
    jobs: Sequence[Job],
    pad_id: int,
    *,
    engine: str = "fast",
    model_name: str = "?",
    progress: bool = True,
    on_step: Callable[[int, int, dict], None] | None = None,
) -> list[TrainResult]:
    """Train several BiPO vectors at one layer of one model in one pass (each equal to its solo run).

    Each job keeps its own plan (data order, directions), vector, AdamW state and schedule; at every
    step the fast engine runs the active jobs' batches as one batch of layers L+1.., each row with its
    own job's vector, so the model is read once per step for all of them. Jobs on the same pairs share
    the cache. ``on_step(job, step, row)`` sees every job's log rows.
    """
    if not jobs:
        raise TrainingError("no vectors to train", fix="give at least one job")
    if len({j.cfg.layer for j in jobs}) != 1:
        raise TrainingError(
            f"vectors trained in one pass must share a layer, got {sorted({j.cfg.layer for j in jobs})}",
            fix="group the jobs by layer",
        )
    with stable_attention(model):
        t0 = time.perf_counter()
        runs: list[_Run] = []
        engines: dict[str, Any] = {}
        for j in jobs:
            runs.append(_Run.begin(model, j, pad_id, engine, engines))
        total = sum(len(r.plan) for r in runs)
        bar = _progress(total, sum(r.start for r in runs), progress)
        try:
            for step_i in range(max(len(r.plan) for r in runs)):
                active = [r for r in runs if r.start <= step_i < r.end]
                if not active:
                    continue
                for r, (pos, neg) in zip(active, _logps(active, step_i, engine)):
                    r.loss(step_i, pos, neg)
                for r in active:
                    r.opt.zero_grad(set_to_none=True)
                sum(r.pending for r in active).backward()
                for r in active:
                    row = r.finish(step_i)
                    if on_step:
                        on_step(runs.index(r), step_i + 1, row)
                bar.update(len(active))
                if len(runs) == 1:
                    row = active[0].log[-1]
                    bar.set_postfix(
                        loss=f"{row['loss']:.4f}", acc=f"{row['reward_acc']:.2f}", norm=f"{row['norm']:.3f}"
                    )
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        return [r.result(model, model_name, engine, seconds if len(runs) == 1 else None) for r in runs]


def _logps(active: list[_Run], step_i: int, engine: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each active job's log-probs at this step: one batched forward on the fast engine, one each on plain."""
    steps = [r.plan[step_i] for r in active]
    if engine in ("fast", "compiled"):
        return fast_logps(
            [(r.eng, s.indices) for r, s in zip(active, steps)], [s.direction * r.v for r, s in zip(active, steps)]
        )
    return [r.eng.logps(s.indices, s.direction * r.v) for r, s in zip(active, steps)]


@dataclass
class _Run:
    """One job in progress: its engine, plan, vector, optimiser, schedule, log and checkpoint."""

    job: Job
    eng: Any
    plan: list[Step]
    v: torch.Tensor
    opt: torch.optim.Optimizer
    sched: Any
    log: list[dict[str, float]]
    start: int
    end: int
    data_sha: str
    t0: float
    last_good: tuple[int, list] = (0, [])
    pending: Any = None
    margin: Any = None

    @classmethod
    def begin(cls, model: nn.Module, job: Job, pad_id: int, engine: str, engines: dict[str, Any]) -> _Run:
        from transformers import get_cosine_schedule_with_warmup

        t0, cfg, pairs = time.perf_counter(), job.cfg, job.pairs
        cfg.validate(len(decoder_layers(model)))
        if not pairs:
            raise TrainingError("no training pairs", fix="check the data: 0 pairs survived validation")
        device = model_device(model)
        data_sha = pairs_checksum(pairs)
        torch.manual_seed(cfg.seed)
        if (engine, data_sha) not in engines:  # jobs on the same pairs share the cache
            engines[(engine, data_sha)] = make_engine(engine, model, pairs, cfg.layer, pad_id)
        v = torch.zeros(hidden_size(model), dtype=torch.float32, device=device, requires_grad=True)
        opt = torch.optim.AdamW([v], lr=cfg.lr, weight_decay=cfg.weight_decay)
        plan = make_plan([p.packed_length for p in pairs], cfg)
        sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, len(plan))
        log: list[dict[str, float]] = []
        start = 0
        ckpt = Path(job.checkpoint) if job.checkpoint else None
        if job.resume and ckpt is not None and ckpt.exists():
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
        end = len(plan) if job.stop_after is None else min(len(plan), max(job.stop_after, start))
        eng = engines[(engine, data_sha)]
        return cls(job, eng, plan, v, opt, sched, log, start, end, data_sha, t0, (start, [dict(r) for r in log]))

    def loss(self, step_i: int, pos: torch.Tensor, neg: torch.Tensor) -> None:
        """This step's loss (kept for the shared backward), or a TrainingError when it is not finite."""
        step, cfg = self.plan[step_i], self.job.cfg
        ref_pos, ref_neg = self.eng.ref_logps(step.indices)
        loss, self.margin = dpo_loss(cfg.beta, step.direction, pos, neg, ref_pos.to(pos), ref_neg.to(neg))
        if not torch.isfinite(loss):
            ckpt = self.job.checkpoint
            raise TrainingError(
                f"loss became {float(loss.detach())} at step {step_i} (epoch {step.epoch})",
                where=str(ckpt) if ckpt else None,
                fix=f"lower the learning rate (now {cfg.lr}); "
                f"the last good checkpoint (step {self.last_good[0]}) is kept",
            )
        self.pending = loss

    def finish(self, step_i: int) -> dict[str, float]:
        """The optimiser and schedule step after the shared backward; the log row; the epoch's checkpoint."""
        self.opt.step()
        self.sched.step()
        step = self.plan[step_i]
        row = {
            "step": step_i + 1,
            "epoch": step.epoch,
            "direction": step.direction,
            "loss": float(self.pending.detach()),
            "reward_acc": float((self.margin > 0).float().mean()),
            "margin": float(self.margin.mean()),
            "lr": float(self.sched.get_last_lr()[0]),
            "norm": float(self.v.detach().norm()),
        }
        self.log.append(row)
        self.pending = None
        epoch_done = step_i + 1 == len(self.plan) or self.plan[step_i + 1].epoch != step.epoch
        if epoch_done and self.job.checkpoint is not None:
            data = checkpoint_bytes(self.v, self.opt, step_i + 1, self.log, self.job.cfg, self.data_sha)
            atomic_write_bytes(Path(self.job.checkpoint), data)
            self.last_good = (step_i + 1, [dict(r) for r in self.log])
        return row

    def result(self, model: nn.Module, model_name: str, engine: str, seconds: float | None) -> TrainResult:
        """The trained vector with its metadata, and the job's wall time (``seconds``: its own when trained alone).

        Times stay out of the file: the same training makes the same bytes, so DVC sees nothing changed."""
        cfg, log = self.job.cfg, self.log
        took = seconds if seconds is not None else time.perf_counter() - self.t0
        meta = {
            **model_meta(model, model_name),
            "method": "bipo",
            "layer": cfg.layer,
            "engine": engine,
            "training": dataclasses.asdict(cfg),
            "steps": len(log),
            "n_pairs": len(self.job.pairs),
            "pairs_sha256": self.data_sha,
            "final_loss": log[-1]["loss"] if log else None,
            "final_reward_acc": log[-1]["reward_acc"] if log else None,
            **(self.job.extra_meta or {}),
        }
        return TrainResult(SteeringVector({cfg.layer: self.v.detach()}, meta), log, took)


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
