"""Fixed inputs scored under any steering: the full model, or through a cache of the stream below the vector.

A curve evaluates the same held-out inputs at several multipliers (and for several vectors at the
same layer: BiPO, CAA at its norm). What flows into the steered layer does not depend on the
vector, so a :class:`Runner` computes it once — one full forward per batch, which is also the
unsteered (m = 0) result — and for every other multiplier runs only the layers after the steered
one on ``stream + m·v`` (other steered layers, if any, by hooks as usual). A check on the first
batch falls back to the full model where an architecture's decoder cannot be entered in the middle
(tests hold both paths equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..forward import after_layer, layer_stream
from ..packing import PackedBatch, chunked
from ..vector import SteeringVector, prompt_positions, steer_mask


@dataclass
class Batch:
    """One forward's inputs, which original items its rows are, and which positions are prompt."""

    idx: list[int]
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T] 0/1, or [B, 1, T, T] additive (packed pairs)
    prompt: torch.Tensor  # [B, T] bool
    position_ids: torch.Tensor | None = None
    packed: PackedBatch | None = None

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        return out if self.position_ids is None else {**out, "position_ids": self.position_ids}


@dataclass
class Runner:
    """Final hidden states of fixed batches under any (vector, multiplier, positions), the stream cached per layer."""

    model: nn.Module
    batches: list[Batch]
    cached: bool = True
    streams: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # layer -> per batch [B, T, H]
    unsteered: list[torch.Tensor] = field(default_factory=list)  # per batch: final hidden at m = 0
    exact: dict[int, bool] = field(default_factory=dict)  # layer -> the cached path reproduces the model there

    def finals(self, vector: SteeringVector, multiplier: float, positions: str = "all") -> list[torch.Tensor]:
        """Per batch, the final hidden states [B, T, H] with ``multiplier × vector`` added at ``positions``."""
        with torch.no_grad():
            layer = min(vector.layer_ids)
            if not self.cached:  # the plain computation: the whole model at every multiplier, m = 0 included
                return [self._full(b, vector, multiplier, positions) for b in self.batches]
            self._stream(layer)  # the first pass also gives the unsteered result
            if multiplier == 0:
                return self.plain()
            if not self._exact(layer):
                return [self._full(b, vector, multiplier, positions) for b in self.batches]
            rest = {i: v for i, v in vector.layers.items() if i != layer}
            out = []
            for b, stream in zip(self.batches, self._stream(layer)):
                with prompt_positions(b.prompt):
                    where = steer_mask(stream, {}, positions)
                    delta = (multiplier * vector.layers[layer]).to(device=stream.device, dtype=stream.dtype)
                    x = stream + (delta if where is None else where * delta)
                    if rest:
                        with SteeringVector(rest).apply(self.model, multiplier, positions):
                            out.append(after_layer(self.model, layer, x, b.attention_mask, b.position_ids))
                    else:
                        out.append(after_layer(self.model, layer, x, b.attention_mask, b.position_ids))
            return out

    def finals_many(
        self, vector: SteeringVector, multipliers: Sequence[float], positions: str = "all", rows: int = 32
    ) -> dict[float, list[torch.Tensor]]:
        """:meth:`finals` for several multipliers; through the cache, up to ``rows`` rows run as one forward."""
        layer = min(vector.layer_ids)
        if not self.cached or len(vector.layers) > 1 or not (self._stream(layer) and self._exact(layer)):
            return {m: self.finals(vector, m, positions) for m in multipliers}
        out: dict[float, list[torch.Tensor]] = {m: [] for m in multipliers}
        steered = [m for m in out if m != 0]
        with torch.no_grad():
            for b, stream in zip(self.batches, self._stream(layer)):
                with prompt_positions(b.prompt):
                    where = steer_mask(stream, {}, positions)
                v = vector.layers[layer].to(device=stream.device, dtype=stream.dtype)
                delta = v if where is None else where * v
                for chunk in chunked(steered, max(1, rows // len(b.idx))):
                    k = len(chunk)
                    x = torch.cat([stream + m * delta for m in chunk])
                    mask = b.attention_mask.repeat(k, *([1] * (b.attention_mask.dim() - 1)))
                    pos = None if b.position_ids is None else b.position_ids.repeat(k, 1)
                    for m, final in zip(chunk, after_layer(self.model, layer, x, mask, pos).split(len(b.idx))):
                        out[m].append(final)
        if 0 in out:
            out[0] = self.plain()
        return out

    def _full(self, b: Batch, vector: SteeringVector, multiplier: float, positions: str) -> torch.Tensor:
        with prompt_positions(b.prompt), vector.apply(self.model, multiplier, positions):
            return self._plain(b)

    def plain(self) -> list[torch.Tensor]:
        """Per batch, the final hidden states without steering (computed once)."""
        if not self.unsteered:
            with torch.no_grad():
                self.unsteered = [self._plain(b) for b in self.batches]
        return self.unsteered

    def _plain(self, b: Batch) -> torch.Tensor:
        from ..forward import decoder_stack

        return decoder_stack(self.model)(use_cache=False, **b.inputs).last_hidden_state

    def _stream(self, layer: int) -> list[torch.Tensor]:
        """The stream leaving ``layer`` per batch (one full forward each, which also gives the unsteered result)."""
        if layer not in self.streams:
            streams, finals = [], []
            for b in self.batches:
                stream, final = layer_stream(self.model, layer, **b.inputs)
                streams.append(stream)
                finals.append(final)
            self.streams[layer] = streams
            self.unsteered = self.unsteered or finals
        return self.streams[layer]

    def _exact(self, layer: int) -> bool:
        """Layers after ``layer`` on the cached stream reproduce the model (checked once, on the first batch's
        first row: whether a decoder can be entered in the middle is a property of its code, not of the inputs)."""
        if layer not in self.exact:
            stream, b = self._stream(layer)[0][:1], self.batches[0]
            pos = None if b.position_ids is None else b.position_ids[:1]
            got = after_layer(self.model, layer, stream, b.attention_mask[:1], pos)
            want = self.plain()[0][:1]
            tol = 1e-4 if want.dtype == torch.float32 else 2e-2
            self.exact[layer] = bool(torch.allclose(got, want, rtol=tol, atol=tol * float(want.abs().max())))
        return self.exact[layer]
