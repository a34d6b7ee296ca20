"""The stream cache and position control, against the plain computations they replace.

* every curve through the cache (the model below the vector run once) equals the full model at every
  multiplier (≤ 1e-4 relative), for one-layer and several-layer vectors, and an architecture whose
  decoder cannot be entered in the middle falls back to the full model;
* ``positions`` adds the vector exactly where a hand-written hook would: every position, the prompt's
  positions, or the answer's (scoring) and the decode steps (generation).
"""

from __future__ import annotations

import pytest
import torch

from steerkit.eval.ab import ab_curve
from steerkit.eval.curves import margin_curve, pair_runner, perplexity_curve
from steerkit.models import decoder_layers
from steerkit.packing import encode_pairs
from steerkit.vector import SteeringVector, prompt_positions

from ...conftest import TinyTokenizer, random_pairs, tiny_model

TEXTS = ["the cat sat on the mat", "a plain sentence with some words in it", "rain falls on the hills"]
MULTS = [-2.0, -1.0, 0.0, 1.0, 2.0]


def vec(layers: tuple[int, ...], scale: float = 0.5, seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({i: torch.randn(32, generator=g) * scale for i in layers})


def close(a: list[dict], b: list[dict], key: str, rel: float = 1e-4) -> bool:
    return all(abs(x[key] - y[key]) <= rel * max(1.0, abs(y[key])) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("layers", [(1,), (0, 2), (3,)])
def test_cached_curves_equal_the_full_model(layers):
    model, tok = tiny_model("llama"), TinyTokenizer()
    pairs, v = random_pairs(10), vec(layers)
    cached = margin_curve(model, tok, pairs, v, MULTS, batch_size=4)
    full = margin_curve(model, tok, pairs, v, MULTS, batch_size=4, cached=False)
    for key in ("margin", "margin_per_token", "win_fraction"):
        assert close(cached, full, key), key
    for a, b in zip(cached, full):
        assert torch.allclose(torch.tensor(a["margins"]), torch.tensor(b["margins"]), rtol=1e-4, atol=1e-4)
    assert close(
        ab_curve(model, tok, pairs, v, MULTS), ab_curve(model, tok, pairs, v, MULTS, cached=False), "p_matching"
    )
    assert close(
        perplexity_curve(model, tok, TEXTS, v, MULTS),
        perplexity_curve(model, tok, TEXTS, v, MULTS, cached=False),
        "perplexity",
    )
    assert cached[2]["margin"] != cached[-1]["margin"]  # the vector does steer


def test_the_cache_is_used_and_checked():
    model, tok = tiny_model("llama"), TinyTokenizer()
    pairs = random_pairs(6)
    runner = pair_runner(model, tok, pairs, batch_size=4)
    margin_curve(model, tok, pairs, vec((2,)), MULTS, runner=runner)
    margin_curve(model, tok, pairs, vec((2,), seed=1), MULTS, runner=runner)  # a second vector at the same layer
    assert runner[0].exact == {2: True} and set(runner[0].streams) == {2}


def test_an_architecture_that_cannot_be_entered_falls_back_to_the_full_model():
    """GPT-2 adds position embeddings to inputs_embeds: the cached path would be wrong, so it is not taken."""
    model, tok = tiny_model("gpt2"), TinyTokenizer()
    pairs, v = random_pairs(6), vec((1,))
    runner, n_pos, n_neg = pair_runner(model, tok, pairs, batch_size=4)
    cached = margin_curve(model, tok, pairs, v, MULTS, runner=(runner, n_pos, n_neg))
    assert runner.exact == {1: False}
    assert close(cached, margin_curve(model, tok, pairs, v, MULTS, cached=False), "margin")


# --------------------------------------------------------------------------------- positions
def hand_hook(model, layer: int, delta: torch.Tensor, where: torch.Tensor):
    """A hook written out by hand: add ``delta`` at the positions where ``where`` [B, T] is True."""

    def hook(_m, _i, out):
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = hidden + where.unsqueeze(-1).to(hidden.dtype) * delta
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    return decoder_layers(model)[layer].register_forward_hook(hook)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
@pytest.mark.parametrize("cached", [True, False])
def test_positions_in_scoring_match_a_hand_written_hook(positions, cached):
    model, tok = tiny_model("llama"), TinyTokenizer()
    pairs, v = random_pairs(8), vec((1,), scale=1.0)
    got = margin_curve(model, tok, pairs, v, [2.0], batch_size=8, positions=positions, cached=cached)
    enc = encode_pairs(tok, pairs)
    runner, _, _ = pair_runner(model, tok, pairs, batch_size=8, cached=False)
    (batch,) = runner.batches
    where = {"all": torch.ones_like(batch.prompt), "prompt": batch.prompt, "generated": ~batch.prompt}[positions]
    handle = hand_hook(model, 1, 2.0 * v.layers[1], where)
    try:
        want = margin_curve(model, tok, pairs, SteeringVector({1: torch.zeros(32)}), [0.0], batch_size=8, cached=False)
    finally:
        handle.remove()
    assert torch.allclose(torch.tensor(got[0]["margins"]), torch.tensor(want[0]["margins"]), atol=1e-4)
    assert len({len(e.prompt) for e in enc}) > 1  # prompts of several lengths: the masks really differ per row


def greedy(model, ids: torch.Tensor, n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return out[0, ids.shape[1] :].tolist()


def test_positions_in_generation():
    model = tiny_model("llama")
    v = vec((1,), scale=4.0)
    ids = torch.tensor([[5, 9, 13, 40, 22, 7]])
    plain = greedy(model, ids, 6)
    with v.apply(model, 1.0):
        everywhere, first_all = greedy(model, ids, 6), greedy(model, ids, 1)
    with v.apply(model, 1.0, positions="prompt"):
        prompt_only = greedy(model, ids, 1)
    with v.apply(model, 1.0, positions="generated"):
        first_generated, generated = greedy(model, ids, 1), greedy(model, ids, 6)
    assert everywhere != plain
    assert prompt_only == first_all  # one token: only the prompt was run, steered
    assert first_generated == plain[:1]  # the first token is predicted from the (unsteered) prompt

    def hook(_m, _i, out):  # decode steps only, written out by hand: one-token forwards
        hidden = out[0] if isinstance(out, tuple) else out
        if hidden.shape[1] == 1:
            hidden = hidden + v.layers[1]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = decoder_layers(model)[1].register_forward_hook(hook)
    try:
        assert generated == greedy(model, ids, 6) and generated != plain
    finally:
        handle.remove()


def test_a_prompt_mask_of_another_shape_is_ignored():
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), prompt_positions(torch.ones(3, 9, dtype=torch.bool)), vec((1,)).apply(model, 1.0, "prompt"):
        steered = model(input_ids=ids).logits
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    assert not torch.allclose(steered, plain)  # a prefill from position 0: the prompt, steered


def test_bad_positions_are_refused():
    from steerkit.errors import VectorError

    with pytest.raises(VectorError, match="positions 'answer'"), vec((1,)).apply(tiny_model("llama"), 1.0, "answer"):
        pass


def test_the_evaluation_measures_other_positions_side_by_side():
    from steerkit.eval.config import EvalConfig
    from steerkit.eval.report import evaluate_vector

    model, tok = tiny_model("llama"), TinyTokenizer()
    pairs, v = random_pairs(6), vec((1,), scale=1.0)
    report = evaluate_vector(
        model, tok, v, pairs, EvalConfig(multipliers=(-1, 1), positions=("all", "generated")), texts=TEXTS
    )
    assert report["positions"] == "all" and set(report["by_positions"]) == {"generated"}
    side = report["by_positions"]["generated"]["margin"]
    assert close(side, margin_curve(model, tok, pairs, v, [-1, 1], positions="generated", cached=False), "margin")
    assert side != report["margin"]


def test_export_warns_when_llamacpp_cannot_honour_the_positions(tmp_path):
    from steerkit.export import to_llamacpp_gguf

    with pytest.warns(UserWarning, match="every position"):
        to_llamacpp_gguf(SteeringVector({3: torch.ones(4)}, {"positions": "prompt"}), tmp_path / "cv.gguf")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_llamacpp_gguf(SteeringVector({3: torch.ones(4)}), tmp_path / "cv2.gguf")  # "all": no warning
