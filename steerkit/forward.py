"""How steerkit runs a model: the decoder stack under the LM head, packed and plain forwards, hooks.

Training, CAA, evaluation and transfer all score answers the same few ways; those ways live here
so that each of them reads a model exactly like the others do.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import ModelError, setting
from .models import decoder_layers, model_device
from .packing import PackedBatch, right_pad


def decoder_stack(model: nn.Module) -> nn.Module:
    """The decoder under the LM head (the module that owns ``layers`` and the final norm)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base.model


def last_hidden(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The final-norm hidden states [B, T, H] of right-padded ``ids`` (no LM head, no KV cache)."""
    return decoder_stack(model)(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).last_hidden_state


def packed_forward(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Full-model logits at the response-predicting positions of a packed batch."""
    hidden = last_hidden(model, batch.input_ids, batch.attention_mask, position_ids=batch.position_ids)
    return model.get_output_embeddings()(hidden[batch.pred_b, batch.pred_pos])


def sequence_logps(
    model: nn.Module, prompts: Sequence[tuple[int, ...]], responses: Sequence[tuple[int, ...]], pad_id: int
) -> torch.Tensor:
    """Σ log p(response tokens | prompt) per sequence, from one full forward pass (the plain way)."""
    device = model_device(model)
    ids, mask = right_pad([p + r for p, r in zip(prompts, responses)], pad_id)
    labels_mask = torch.zeros_like(mask)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        labels_mask[i, len(p) : len(p) + len(r)] = 1
    ids, mask, labels_mask = ids.to(device), mask.to(device), labels_mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    token_logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (token_logp * labels_mask[:, 1:]).sum(-1)


@contextmanager
def capture_output(block: nn.Module, store: list) -> Iterator[None]:
    """Append the hidden-state output of ``block`` to ``store`` on every forward, while inside."""

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        store.append((out[0] if isinstance(out, tuple) else out).detach())

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _layer_list_name(model: nn.Module) -> tuple[nn.Module, str]:
    """The decoder under the LM head and the name of its layer list."""
    base = decoder_stack(model)
    full = decoder_layers(model)
    name = next((n for n, m in base.named_children() if m is full), None)
    if name is None:
        raise ModelError(
            f"cannot find the layer list inside {type(base).__name__}",
            fix=f"train with the plain engine ({setting('engine', 'plain')}) for this architecture",
        )
    return base, name


@contextmanager
def only_layers_after(model: nn.Module, layer: int) -> Iterator[nn.Module]:
    """Temporarily make the decoder run layers ``layer+1..`` only, fed through ``inputs_embeds``."""
    base, name = _layer_list_name(model)
    full = getattr(base, name)
    setattr(base, name, nn.ModuleList(list(full)[layer + 1 :]))
    try:
        yield base
    finally:
        setattr(base, name, full)


def suffix_decoder(model: nn.Module, layer: int) -> nn.Module:
    """A decoder that runs layers ``layer+1..`` and the final norm, sharing every weight with ``model``.

    ``after_layer`` swaps the layer list in and out around each call; a compiled step needs one module
    that stays the same, so this is a shallow copy whose layer list is the suffix (the model is untouched).
    """
    base, name = _layer_list_name(model)
    suffix = copy.copy(base)
    suffix._modules = dict(base._modules)  # its own child table: the original keeps its full layer list
    setattr(suffix, name, nn.ModuleList(list(getattr(base, name))[layer + 1 :]))
    return suffix


def layer_stream(model: nn.Module, layer: int, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One full forward: the stream leaving decoder layer ``layer`` and the final hidden states ([B, T, H] each)."""
    store: list[torch.Tensor] = []
    with capture_output(decoder_layers(model)[layer], store):
        final = decoder_stack(model)(use_cache=False, **inputs).last_hidden_state
    return store[0], final


def after_layer(
    model: nn.Module,
    layer: int,
    stream: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The final hidden states when the stream leaving ``layer`` is ``stream``: layers ``layer+1..`` only."""
    with only_layers_after(model, layer) as base:
        return base(
            inputs_embeds=stream, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
