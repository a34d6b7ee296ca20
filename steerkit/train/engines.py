"""The two engines that compute BiPO's log-probabilities: the plain one (the oracle) and the fast one.

* ``PlainEngine`` reads like the equation: a reference forward every step and a full forward +
  backward with a hook on layer L.
* ``FastEngine`` computes what does not depend on v once (reference log-probs, and the residual
  stream leaving layer L), then each step runs only layers L+1.., the final norm and the LM head at
  response positions, with both answers packed into one sequence that shares the prompt.

Both return (log p(matching), log p(not matching)) per pair; tests hold them equal.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from ..errors import TrainingError, setting
from ..forward import after_layer, capture_output, packed_forward, sequence_logps, suffix_decoder
from ..models import decoder_layers, model_device
from ..packing import EncodedPair, pack, segment_logps
from ..vector import add_to_output


class Engine(Protocol):
    def ref_logps(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def logps(self, idx: Sequence[int], delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


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


class FastEngine:
    """Caches the reference log-probs and layer-L outputs once; each step runs layers L+1.. only."""

    def __init__(
        self,
        model: nn.Module,
        pairs: Sequence[EncodedPair],
        layer: int,
        pad_id: int,
        cache_batch: int = 8,
        check: bool = True,
    ) -> None:
        self.model, self.pairs, self.layer, self.pad_id = model, pairs, layer, pad_id
        self.device = model_device(model)
        self.dtype = next(model.parameters()).dtype
        self.pad_to: int | None = None  # the step's length rounded up to a multiple (a compiled step: few shapes)
        self._suffix: Callable[..., torch.Tensor] | None = None  # compiled layers L+1.. (``compile``)
        self.hidden: list[torch.Tensor] = []  # per pair: [T_i, H] output of layer L
        ref_pos, ref_neg = [], []
        order = sorted(range(len(pairs)), key=lambda i: pairs[i].packed_length)
        hidden_by_idx: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for s in range(0, len(order), cache_batch):
                idx = order[s : s + cache_batch]
                batch = pack([pairs[i] for i in idx], pad_id, self.dtype).to(self.device)
                store: list[torch.Tensor] = []
                with capture_output(decoder_layers(model)[layer], store):
                    logits = packed_forward(model, batch)
                pos, neg = segment_logps(logits, batch)
                for j, i in enumerate(idx):
                    hidden_by_idx[i] = store[0][j, : pairs[i].packed_length].clone()
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

    def compile(self, backend: str | None = None, mode: str | None = None, pad_to: int = 32) -> FastEngine:
        """Run layers L+1.. through ``torch.compile`` from now on: on CUDA with ``mode="reduce-overhead"``
        (CUDA graphs: one launch per step instead of hundreds), lengths padded to multiples of ``pad_to`` so
        that a handful of shapes are compiled. Same result within floating-point reordering."""
        if mode is None and backend in (None, "inductor"):
            mode = "reduce-overhead" if self.device.type == "cuda" else None
        self._suffix, self.pad_to = compiled_suffix(self.model, self.layer, backend or "inductor", mode), pad_to
        return self

    def suffix(self, stream: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The final hidden states when the stream leaving layer L is ``stream``."""
        if self._suffix is not None:
            return self._suffix(stream, mask, positions)
        return after_layer(self.model, self.layer, stream, mask, positions)

    def logps(self, idx: Sequence[int], delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (out,) = fast_logps([(self, idx)], [delta])
        return out

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
                fix=f"train with the plain engine ({setting('engine', 'plain')}) for this architecture",
            )


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_suffix(model: nn.Module, layer: int, backend: str, mode: str | None) -> Callable[..., torch.Tensor]:
    """Layers ``layer+1..`` of ``model`` through torch.compile, made once per (model, layer, backend, mode):
    every engine on that model shares it, so a calibration sweep compiles each shape once, not per run."""
    per_model = _COMPILED.setdefault(model, {})
    key = (layer, backend, mode)
    if key not in per_model:
        compiled = torch.compile(suffix_decoder(model, layer), backend=backend, mode=mode, dynamic=False)

        def run(stream: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            out = compiled(inputs_embeds=stream, attention_mask=mask, position_ids=positions, use_cache=False)
            return out.last_hidden_state

        per_model[key] = run
    return per_model[key]


def fast_logps(
    parts: Sequence[tuple[FastEngine, Sequence[int]]], deltas: Sequence[torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(log p(matching), log p(not matching)) of several batches in one pass of layers L+1..: part k's
    pairs from its engine's cache, steered by ``deltas[k]`` (K vectors trained together)."""
    first = parts[0][0]
    rows = [(e, i) for e, idx in parts for i in idx]
    batch = pack([e.pairs[i] for e, i in rows], first.pad_id, first.dtype, first.pad_to).to(first.device)
    T, H = batch.input_ids.shape[1], first.hidden[0].shape[-1]
    embeds = torch.zeros((len(rows), T, H), dtype=first.dtype, device=first.device)
    for b, (e, i) in enumerate(rows):
        embeds[b, : batch.lengths[b]] = e.hidden[i]
    if len(parts) == 1:
        embeds = embeds + deltas[0].to(first.dtype)
    else:
        per_row = torch.cat([d.to(first.dtype).expand(len(idx), H) for (_, idx), d in zip(parts, deltas)])
        embeds = embeds + per_row[:, None, :]
    hidden = first.suffix(embeds, batch.attention_mask, batch.position_ids)
    logits = first.model.get_output_embeddings()(hidden[batch.pred_b, batch.pred_pos])
    pos, neg = segment_logps(logits, batch)
    sizes = [len(idx) for _, idx in parts]
    return list(zip(pos.split(sizes), neg.split(sizes)))


ENGINES = ("fast", "compiled", "plain")


def make_engine(name: str, model: nn.Module, pairs: Sequence[EncodedPair], layer: int, pad_id: int) -> Engine:
    """The engine called ``name``: "fast" (cached, exact), "compiled" (fast, its step through torch.compile:
    CUDA graphs on a GPU) or "plain" (the reference)."""
    if name == "plain":
        return PlainEngine(model, pairs, layer, pad_id)
    if name in ("fast", "compiled"):
        engine = FastEngine(model, pairs, layer, pad_id)
        return engine.compile() if name == "compiled" else engine
    raise TrainingError(f"unknown engine {name!r}", where="engine", fix="use " + ", ".join(ENGINES))
