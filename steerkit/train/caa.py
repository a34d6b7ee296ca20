"""Mean-difference (CAA) baseline: the same SteeringVector, made without optimisation.

v = mean over pairs of [ mean layer-L output over the matching answer's tokens
                        − mean layer-L output over the non-matching answer's tokens ].
The positions are the response tokens themselves (the prompt is shared, so it cancels), which
for free-text answers is the natural analogue of CAA's answer-letter position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import TrainingError, setting
from ..forward import capture_output, packed_forward
from ..models import decoder_layers
from ..packing import EncodedPair, pack
from ..vector import SteeringVector, model_meta


def train_caa(
    model: nn.Module,
    pairs: Sequence[EncodedPair],
    layer: int,
    pad_id: int,
    *,
    model_name: str = "?",
    batch_size: int = 8,
) -> SteeringVector:
    """CAA vector at ``layer`` from encoded pairs (one packed forward per batch)."""
    n_layers = len(decoder_layers(model))
    if not 0 <= layer < n_layers:
        raise TrainingError(
            f"layer {layer} does not exist; the model has layers 0..{n_layers - 1}",
            where="layer",
            fix=f"pick a middle layer, e.g. {setting('layer', n_layers // 2)}",
        )
    if not pairs:
        raise TrainingError("no pairs to average", fix="check the data: 0 pairs survived validation")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    total = None
    with torch.no_grad():
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s : s + batch_size]
            batch = pack(chunk, pad_id, dtype).to(device)
            store: list[torch.Tensor] = []
            with capture_output(decoder_layers(model)[layer], store):
                packed_forward(model, batch)
            hidden = store[0].float()
            for b, p in enumerate(chunk):
                P, C = len(p.prompt), len(p.matching)
                diff = hidden[b, P : P + C].mean(0) - hidden[b, P + C : P + C + len(p.not_matching)].mean(0)
                total = diff if total is None else total + diff
    meta = {
        **model_meta(model, model_name),
        "method": "caa",
        "layer": layer,
        "n_pairs": len(pairs),
        "positions": "mean over response tokens",
    }
    return SteeringVector({layer: total / len(pairs)}, meta)
