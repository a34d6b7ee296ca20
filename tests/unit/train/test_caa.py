"""CAA baseline against an independent computation with separate sequences and output_hidden_states."""

from __future__ import annotations

import torch

from steerkit.packing import encode_pairs
from steerkit.train.caa import train_caa

from ...conftest import TinyTokenizer, random_pairs, tiny_model


def test_caa_equals_mean_difference_computed_separately():
    model, tok = tiny_model("llama"), TinyTokenizer()
    enc = encode_pairs(tok, random_pairs(7))
    layer = 2
    vec = train_caa(model, enc, layer, 0, batch_size=3)
    diffs = []
    with torch.no_grad():
        for p in enc:

            def resp_mean(resp):
                ids = torch.tensor([p.prompt + resp])
                hs = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
                return hs[0, len(p.prompt) :].mean(0)

            diffs.append(resp_mean(p.matching) - resp_mean(p.not_matching))
    want = torch.stack(diffs).mean(0)
    assert (vec.layers[layer] - want).abs().max() < 1e-5
    assert vec.meta["method"] == "caa" and vec.meta["layer"] == layer and vec.meta["n_pairs"] == 7
