"""BiPO: bi-directional preference optimisation of a steering vector (Cao et al. 2024).

A vector v is added, times a direction d ∈ {−1, +1} drawn per batch, to the output of decoder
layer L at every position. For a pair (q, r⁺, r⁻)::

    loss = −log σ( β · d · [ (log p_dv(r⁺|q) − log p_0(r⁺|q)) − (log p_dv(r⁻|q) − log p_0(r⁻|q)) ] )

Two engines compute the same loss:

* ``PlainEngine`` reads like the equation: a reference forward every step and a full forward +
  backward with a hook on layer L. It is the oracle the fast engine is tested against.
* ``FastEngine`` computes what does not depend on v once (reference log-probs, and the residual
  stream leaving layer L), then each step runs only layers L+1.., the final norm and the LM head at
  response positions, with both answers packed into one sequence that shares the prompt.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TrainingError
from .fileio import atomic_write_bytes, atomic_write_text, sha256_bytes
from .models import decoder_layers, hidden_size, model_device, stable_attention
from .packing import EncodedPair, PackedBatch, pack, right_pad, segment_logps
from .vector import SteeringVector, add_to_output, model_meta

CHECKPOINT_VERSION = 1


@dataclass
class BipoConfig:
    """Training parameters; defaults are the official BiPO values (Llama-2-7b, layer 15 of 32)."""

    layer: int = 15
    beta: float = 0.1
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    batch_size: int = 4
    epochs: int = 20
    seed: int = 0
    bucket: bool = True  # group similar lengths into batches (less padding); same plan for both engines

    def validate(self, n_layers: int) -> None:
        if not 0 <= self.layer < n_layers:
            raise TrainingError(f"layer {self.layer} does not exist; the model has layers 0..{n_layers - 1}",
                                where="layer", fix="pick a middle layer, e.g. --layer " + str(n_layers // 2))
        for name in ("beta", "lr"):
            if not getattr(self, name) > 0 or not math.isfinite(getattr(self, name)):
                raise TrainingError(f"{name} must be > 0 and finite, got {getattr(self, name)}", where=name,
                                    fix=f"set {name} to a positive number, e.g. {BipoConfig.__dataclass_fields__[name].default}")
        if self.batch_size < 1 or self.epochs < 1 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise TrainingError(f"bad training parameters: {asdict(self)}", where="training parameters",
                                fix="batch_size and epochs must be >= 1, warmup_steps and weight_decay >= 0")


@dataclass(frozen=True)
class Step:
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
            order = [i for s in range(0, n, window) for i in sorted(order[s:s + window], key=lambda j: lengths[j])]
        batches = [tuple(order[s:s + cfg.batch_size]) for s in range(0, n, cfg.batch_size)]
        if cfg.bucket:
            rng.shuffle(batches)
        steps += [Step(b, rng.choice((-1, 1)), epoch) for b in batches]
    return steps


def dpo_loss(beta: float, direction: int, pos: torch.Tensor, neg: torch.Tensor, ref_pos: torch.Tensor,
             ref_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BiPO loss (mean over the batch) and the per-pair reward margins d·[(Δ⁺) − (Δ⁻)]."""
    margin = direction * ((pos - ref_pos) - (neg - ref_neg))
    return -F.logsigmoid(beta * margin).mean(), margin.detach()


class Engine(Protocol):
    def ref_logps(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def logps(self, idx: Sequence[int], delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


# ------------------------------------------------------------------------------------------------
# Plain engine: the equation, as written.
# ------------------------------------------------------------------------------------------------
def sequence_logps(model: nn.Module, prompts: list[tuple[int, ...]], responses: list[tuple[int, ...]],
                   pad_id: int) -> torch.Tensor:
    """Σ log p(response tokens | prompt) per sequence, from one full forward pass."""
    device = model_device(model)
    ids, mask = right_pad([p + r for p, r in zip(prompts, responses)], pad_id)
    labels_mask = torch.zeros_like(mask)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        labels_mask[i, len(p):len(p) + len(r)] = 1
    ids, mask, labels_mask = ids.to(device), mask.to(device), labels_mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    token_logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (token_logp * labels_mask[:, 1:]).sum(-1)


class PlainEngine:
    """Reference forward each step; policy forward through the whole model with a hook at layer L."""

    def __init__(self, model: nn.Module, pairs: Sequence[EncodedPair], layer: int, pad_id: int) -> None:
        self.model, self.pairs, self.layer, self.pad_id = model, pairs, layer, pad_id

    def _both(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [self.pairs[i].prompt for i in idx]
        pos = sequence_logps(self.model, prompts, [self.pairs[i].matching for i in idx], self.pad_id)
        neg = sequence_logps(self.model, prompts, [self.pairs[i].not_matching for i in idx], self.pad_id)
        return pos, neg

    def ref_logps(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self._both(idx)

    def logps(self, idx: Sequence[int], delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with add_to_output(decoder_layers(self.model)[self.layer], delta):
            return self._both(idx)


# ------------------------------------------------------------------------------------------------
# Fast engine: cache what v cannot change, run only the layers after L.
# ------------------------------------------------------------------------------------------------
def _base_model(model: nn.Module) -> nn.Module:
    """The decoder stack under the LM head (the module that owns ``layers`` and the final norm)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base.model


@contextmanager
def only_layers_after(model: nn.Module, layer: int) -> Iterator[nn.Module]:
    """Temporarily make the decoder run layers ``layer+1..`` only, fed through ``inputs_embeds``."""
    base = _base_model(model)
    full = decoder_layers(model)
    name = next((n for n, m in base.named_children() if m is full), None)
    if name is None:
        raise TrainingError(f"cannot find the layer list inside {type(base).__name__}",
                            fix="train with engine='plain' (--engine plain) for this architecture")
    setattr(base, name, nn.ModuleList(list(full)[layer + 1:]))
    try:
        yield base
    finally:
        setattr(base, name, full)


@contextmanager
def capture_output(block: nn.Module, store: list) -> Iterator[None]:
    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        store.append((out[0] if isinstance(out, tuple) else out).detach())

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def packed_forward(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Full-model logits at the response-predicting positions of a packed batch."""
    base = _base_model(model)
    hidden = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  position_ids=batch.position_ids, use_cache=False).last_hidden_state
    return model.get_output_embeddings()(hidden[batch.pred_b, batch.pred_pos])


class FastEngine:
    """Caches the reference log-probs and layer-L outputs once; each step runs layers L+1.. only."""

    def __init__(self, model: nn.Module, pairs: Sequence[EncodedPair], layer: int, pad_id: int,
                 cache_batch: int = 8, check: bool = True) -> None:
        self.model, self.pairs, self.layer, self.pad_id = model, pairs, layer, pad_id
        self.device = model_device(model)
        self.dtype = next(model.parameters()).dtype
        self.hidden: list[torch.Tensor] = []  # per pair: [T_i, H] output of layer L
        ref_pos, ref_neg = [], []
        order = sorted(range(len(pairs)), key=lambda i: pairs[i].packed_length)
        hidden_by_idx: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for s in range(0, len(order), cache_batch):
                idx = order[s:s + cache_batch]
                batch = pack([pairs[i] for i in idx], pad_id, self.dtype).to(self.device)
                store: list[torch.Tensor] = []
                with capture_output(decoder_layers(model)[layer], store):
                    logits = packed_forward(model, batch)
                pos, neg = segment_logps(logits, batch)
                for j, i in enumerate(idx):
                    hidden_by_idx[i] = store[0][j, :pairs[i].packed_length].clone()
                    ref_pos.append((i, pos[j]))
                    ref_neg.append((i, neg[j]))
        self.hidden = [hidden_by_idx[i] for i in range(len(pairs))]
        self._ref_pos = torch.stack([v for _, v in sorted(ref_pos, key=lambda t: t[0])])
        self._ref_neg = torch.stack([v for _, v in sorted(ref_neg, key=lambda t: t[0])])
        if check:
            self.check_exact()

    @property
    def cache_bytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)

    def ref_logps(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.tensor(list(idx))
        return self._ref_pos[i], self._ref_neg[i]

    def logps(self, idx: Sequence[int], delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pack([self.pairs[i] for i in idx], self.pad_id, self.dtype).to(self.device)
        T = max(batch.lengths)
        embeds = torch.zeros((len(idx), T, self.hidden[0].shape[-1]), dtype=self.dtype, device=self.device)
        for b, i in enumerate(idx):
            embeds[b, :batch.lengths[b]] = self.hidden[i]
        embeds = embeds + delta.to(self.dtype)
        with only_layers_after(self.model, self.layer) as base:
            hidden = base(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids, use_cache=False).last_hidden_state
        logits = self.model.get_output_embeddings()(hidden[batch.pred_b, batch.pred_pos])
        return segment_logps(logits, batch)

    def check_exact(self, n: int = 2) -> None:
        """Layers L+1.. on the cached stream must reproduce the full model; else this architecture is unsupported."""
        idx = list(range(min(n, len(self.pairs))))
        with torch.no_grad():
            pos, neg = self.logps(idx, torch.zeros(self.hidden[0].shape[-1], device=self.device))
            plain = PlainEngine(self.model, self.pairs, self.layer, self.pad_id).ref_logps(idx)
        got, want = torch.cat([pos, neg]), torch.cat(plain)
        tol = (1e-3 if self.dtype == torch.float32 else 5e-2) * (1 + want.abs())
        if not bool(((got - want).abs() <= tol).all()):
            raise TrainingError(
                f"the fast BiPO engine does not reproduce {type(self.model).__name__} "
                f"(max log-prob difference {float((got - want).abs().max()):.3g})",
                fix="train with engine='plain' (--engine plain) for this architecture")


# ------------------------------------------------------------------------------------------------
# The training loop, shared by both engines.
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    vector: SteeringVector
    log: list[dict[str, float]]
    seconds: float


def _checkpoint_bytes(v: torch.Tensor, opt: torch.optim.Optimizer, step: int, log: list[dict],
                      cfg: BipoConfig, data_sha: str) -> bytes:
    from safetensors.torch import save

    state = opt.state_dict()["state"].get(0, {})
    tensors = {"v": v.detach().cpu().contiguous()}
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            tensors[key] = state[key].detach().cpu().contiguous()
    meta = {"checkpoint_version": str(CHECKPOINT_VERSION), "step": str(step),
            "adam_step": str(float(state["step"])) if "step" in state else "0",
            "config": json.dumps(asdict(cfg), sort_keys=True), "data_sha256": data_sha, "log": json.dumps(log)}
    return save(tensors, metadata=meta)


def _load_checkpoint(path: Path, cfg: BipoConfig, data_sha: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n])["__metadata__"]
        # every field resume reads, so a file that is not a steerkit checkpoint fails here, not mid-resume
        config, _, _, _ = json.loads(meta["config"]), int(meta["step"]), float(meta["adam_step"]), json.loads(meta["log"])
        if "v" not in tensors or not isinstance(meta["data_sha256"], str) \
                or meta["checkpoint_version"] != str(CHECKPOINT_VERSION):
            raise ValueError("no tensor 'v' or another checkpoint_version")
    except Exception as exc:  # noqa: BLE001 - safetensors, json, KeyError, ...: all mean "not a usable checkpoint"
        raise TrainingError(f"checkpoint is corrupt or not a steerkit BiPO checkpoint ({type(exc).__name__}: {exc})",
                            where=str(path), fix="delete it to train from the start") from None
    if config != asdict(cfg) or meta["data_sha256"] != data_sha:
        raise TrainingError("checkpoint was made with other parameters or data", where=str(path),
                            fix="delete it, or resume with the same parameters and data")
    return tensors, meta


def pairs_checksum(pairs: Sequence[EncodedPair]) -> str:
    return sha256_bytes(json.dumps([[p.prompt, p.matching, p.not_matching] for p in pairs]).encode())


def train(model: nn.Module, pairs: Sequence[EncodedPair], cfg: BipoConfig, pad_id: int, *,
          engine: str = "fast", model_name: str = "?", checkpoint: str | Path | None = None,
          resume: bool = False, progress: bool = True, stop_after: int | None = None,
          extra_meta: dict[str, Any] | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train one BiPO vector. ``checkpoint`` is written each epoch; ``resume`` continues from it."""
    with stable_attention(model):
        return _train(model, pairs, cfg, pad_id, engine=engine, model_name=model_name, checkpoint=checkpoint,
                      resume=resume, progress=progress, stop_after=stop_after, extra_meta=extra_meta, on_step=on_step)


def _train(model: nn.Module, pairs: Sequence[EncodedPair], cfg: BipoConfig, pad_id: int, *, engine: str,
           model_name: str, checkpoint: str | Path | None, resume: bool, progress: bool, stop_after: int | None,
           extra_meta: dict[str, Any] | None, on_step: Callable[[int, dict], None] | None) -> TrainResult:
    t0 = time.perf_counter()
    cfg.validate(len(decoder_layers(model)))
    if not pairs:
        raise TrainingError("no training pairs", fix="check the data: 0 pairs survived validation")
    device = model_device(model)
    data_sha = pairs_checksum(pairs)
    torch.manual_seed(cfg.seed)
    eng: Engine
    if engine == "plain":
        eng = PlainEngine(model, pairs, cfg.layer, pad_id)
    elif engine == "fast":
        eng = FastEngine(model, pairs, cfg.layer, pad_id)
    else:
        raise TrainingError(f"unknown engine {engine!r}", fix="use 'fast' or 'plain'")

    from transformers import get_cosine_schedule_with_warmup

    v = torch.zeros(hidden_size(model), dtype=torch.float32, device=device, requires_grad=True)
    opt = torch.optim.AdamW([v], lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = make_plan([p.packed_length for p in pairs], cfg)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, len(plan))
    log: list[dict[str, float]] = []
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if resume and ckpt is not None and ckpt.exists():
        tensors, meta = _load_checkpoint(ckpt, cfg, data_sha)
        start = int(meta["step"])
        with torch.no_grad():
            v.copy_(tensors["v"].to(device))
        if "exp_avg" in tensors:
            opt.state[v] = {"step": torch.tensor(float(meta["adam_step"])),
                            "exp_avg": tensors["exp_avg"].to(device), "exp_avg_sq": tensors["exp_avg_sq"].to(device)}
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
                    fix=f"lower the learning rate (now {cfg.lr}); the last good checkpoint (step {last_good[0]}) is kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            row = {"step": step_i + 1, "epoch": step.epoch, "direction": step.direction, "loss": float(loss.detach()),
                   "reward_acc": float((margin > 0).float().mean()), "margin": float(margin.mean()),
                   "lr": float(sched.get_last_lr()[0]), "norm": float(v.detach().norm())}
            log.append(row)
            if on_step:
                on_step(step_i + 1, row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['reward_acc']:.2f}", norm=f"{row['norm']:.3f}")
            epoch_done = step_i + 1 == len(plan) or plan[step_i + 1].epoch != step.epoch
            if epoch_done and ckpt is not None:
                atomic_write_bytes(ckpt, _checkpoint_bytes(v, opt, step_i + 1, log, cfg, data_sha))
                last_good = (step_i + 1, [dict(r) for r in log])
            if stop_after is not None and step_i + 1 >= stop_after:
                break
    finally:
        bar.close()
    meta = {**model_meta(model, model_name), "method": "bipo", "layer": cfg.layer, "engine": engine,
            "training": asdict(cfg), "steps": len(log), "n_pairs": len(pairs), "pairs_sha256": data_sha,
            "final_loss": log[-1]["loss"] if log else None, "final_reward_acc": log[-1]["reward_acc"] if log else None,
            "seconds": round(time.perf_counter() - t0, 2), **(extra_meta or {})}
    vector = SteeringVector({cfg.layer: v.detach()}, meta)
    return TrainResult(vector, log, time.perf_counter() - t0)


def _progress(total: int, start: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="BiPO", unit="step", disable=None if enabled else True, dynamic_ncols=True)


def write_log_csv(path: str | Path, log: list[dict[str, float]]) -> None:
    """The per-step training log as CSV (atomic)."""
    buf = io.StringIO()
    if log:
        writer = csv.DictWriter(buf, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)
    atomic_write_text(path, buf.getvalue())
