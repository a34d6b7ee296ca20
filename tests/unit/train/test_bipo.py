"""The BiPO engines: the fast one must equal the plain one (the equation as written)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from steerkit.errors import TrainingError
from steerkit.forward import packed_forward
from steerkit.packing import encode_pairs, pack, segment_logps
from steerkit.train import bipo
from steerkit.train.engines import FastEngine, PlainEngine

from ...conftest import TinyTokenizer, random_pairs, tiny_model


@pytest.fixture
def setup():
    return tiny_model("llama"), encode_pairs(TinyTokenizer(), random_pairs())


CFG = dict(layer=1, epochs=4, batch_size=4, warmup_steps=2, lr=1e-2)


def test_packed_logps_equal_separate_sequences(setup):
    """One packed [prompt|matching|not_matching] pass scores both answers like two separate passes."""
    model, enc = setup
    batch = pack(enc[:5], 0)
    with torch.no_grad():
        pos, neg = segment_logps(packed_forward(model, batch), batch)
        ref = PlainEngine(model, enc, 1, 0).ref_logps(range(5))
    assert torch.allclose(pos, ref[0], atol=1e-5) and torch.allclose(neg, ref[1], atol=1e-5)
    assert (pos != neg).all()


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_fast_equals_plain_after_24_steps(setup, layer):
    model, enc = setup
    cfg = bipo.BipoConfig(**{**CFG, "layer": layer})
    a = bipo.train(model, enc, cfg, 0, engine="plain", progress=False)
    b = bipo.train(model, enc, cfg, 0, engine="fast", progress=False)
    assert len(a.log) == len(b.log) == 24
    va, vb = a.vector.layers[layer], b.vector.layers[layer]
    assert va.norm() > 0.05  # it really trained
    assert (va - vb).abs().max() <= 1e-5
    assert [r["direction"] for r in a.log] == [r["direction"] for r in b.log]


def test_loss_matches_equation_by_hand(setup):
    """First step's loss equals −log σ(β·d·[(Δ⁺)−(Δ⁻)]) with v = 0, i.e. log 2, and later steps move."""
    model, enc = setup
    res = bipo.train(model, enc, bipo.BipoConfig(**CFG), 0, engine="fast", progress=False)
    assert math.isclose(res.log[0]["loss"], math.log(2), rel_tol=1e-6)
    assert res.log[-1]["loss"] < math.log(2)


def test_plan_is_deterministic_and_covers_every_pair():
    lengths = [random.Random(1).randint(5, 50) for _ in range(30)]
    cfg = bipo.BipoConfig(epochs=3, batch_size=4, seed=7)
    p1, p2 = bipo.make_plan(lengths, cfg), bipo.make_plan(lengths, cfg)
    assert p1 == p2
    for epoch in range(3):
        seen = sorted(i for s in p1 if s.epoch == epoch for i in s.indices)
        assert seen == list(range(30))
    assert {s.direction for s in p1} == {-1, 1}
    assert bipo.make_plan(lengths, bipo.BipoConfig(epochs=3, batch_size=4, seed=8)) != p1


def test_resume_reaches_the_same_vector(setup, tmp_path):
    model, enc = setup
    cfg = bipo.BipoConfig(**CFG)
    full = bipo.train(model, enc, cfg, 0, progress=False)
    ckpt = tmp_path / "v.ckpt"
    part = bipo.train(model, enc, cfg, 0, progress=False, checkpoint=ckpt, stop_after=14)  # mid-epoch 3
    assert ckpt.exists() and len(part.log) == 14
    resumed = bipo.train(model, enc, cfg, 0, progress=False, checkpoint=ckpt, resume=True)
    assert len(resumed.log) == 24
    assert (resumed.vector.layers[1] - full.vector.layers[1]).abs().max() <= 1e-6
    assert [r["loss"] for r in resumed.log] == pytest.approx([r["loss"] for r in full.log], abs=1e-6)


def test_resume_refuses_a_checkpoint_from_other_parameters(setup, tmp_path):
    model, enc = setup
    ckpt = tmp_path / "v.ckpt"
    bipo.train(model, enc, bipo.BipoConfig(**CFG), 0, progress=False, checkpoint=ckpt, stop_after=6)
    with pytest.raises(TrainingError, match="other parameters"):
        bipo.train(model, enc, bipo.BipoConfig(**{**CFG, "lr": 0.5}), 0, progress=False, checkpoint=ckpt, resume=True)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(setup, tmp_path):
    model, enc = setup
    ckpt = tmp_path / "v.ckpt"
    calls = {"n": 0}

    def poison(step, row):  # after epoch 1 is checkpointed, corrupt the weights so the loss turns NaN
        calls["n"] += 1
        if step == 6:
            model.lm_head.weight.data[0, 0] = float("nan")

    try:
        with pytest.raises(TrainingError, match="loss became nan") as err:
            bipo.train(model, enc, bipo.BipoConfig(**CFG), 0, progress=False, checkpoint=ckpt, on_step=poison)
    finally:
        model.lm_head.weight.data[0, 0] = 0.0
    assert "lower the learning rate" in err.value.fix
    assert ckpt.exists()
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as f:
        assert f.metadata()["step"] == "6"
        assert torch.isfinite(f.get_tensor("v")).all()


def test_fast_engine_refuses_an_architecture_it_cannot_reproduce():
    """GPT-2 adds position embeddings to inputs_embeds, so running layers L+1.. on the cache is wrong."""
    model = tiny_model("gpt2")
    enc = encode_pairs(TinyTokenizer(), random_pairs(4))
    with pytest.raises(TrainingError, match="plain"):
        FastEngine(model, enc, 1, 0)
    res = bipo.train(
        model,
        enc,
        bipo.BipoConfig(layer=1, epochs=1, batch_size=2, warmup_steps=0, lr=1e-2),
        0,
        engine="plain",
        progress=False,
    )
    assert res.vector.norm() > 0


@pytest.mark.parametrize("arch", ["mistral", "qwen2", "phi3"])
def test_fast_equals_plain_on_other_architectures(arch):
    model = tiny_model(arch)
    enc = encode_pairs(TinyTokenizer(), random_pairs(8))
    cfg = bipo.BipoConfig(layer=1, epochs=3, batch_size=4, warmup_steps=1, lr=1e-2)
    a = bipo.train(model, enc, cfg, 0, engine="plain", progress=False)
    b = bipo.train(model, enc, cfg, 0, engine="fast", progress=False)
    assert (a.vector.layers[1] - b.vector.layers[1]).abs().max() <= 1e-5


def test_bad_config_is_refused(setup):
    model, enc = setup
    with pytest.raises(TrainingError, match="layer 9 does not exist"):
        bipo.train(model, enc, bipo.BipoConfig(layer=9), 0, progress=False)
    with pytest.raises(TrainingError, match="lr must be > 0"):
        bipo.train(model, enc, bipo.BipoConfig(layer=1, lr=0), 0, progress=False)
    with pytest.raises(TrainingError, match="no training pairs"):
        bipo.train(model, [], bipo.BipoConfig(layer=1), 0, progress=False)


def test_vector_metadata_tells_how_it_was_made(setup):
    model, enc = setup
    res = bipo.train(model, enc, bipo.BipoConfig(**CFG), 0, progress=False, model_name="tiny")
    meta = res.vector.meta
    assert meta["method"] == "bipo" and meta["layer"] == 1 and meta["model"] == "tiny"
    assert meta["training"]["lr"] == CFG["lr"] and meta["n_pairs"] == 24 and len(meta["pairs_sha256"]) == 64
    assert meta["hidden_size"] == 32 and meta["num_layers"] == 4 and meta["model_fingerprint"]


def test_several_vectors_in_one_pass_equal_their_solo_runs(setup):
    """K jobs at one layer (other data, other lr/seed/epochs, shared data) trained together = each alone."""
    model, enc = setup
    other = encode_pairs(TinyTokenizer(), random_pairs(14, seed=3))
    jobs = [
        bipo.Job(enc, bipo.BipoConfig(**CFG)),
        bipo.Job(enc, bipo.BipoConfig(**{**CFG, "lr": 3e-2, "seed": 1})),  # a sweep on the same pairs
        bipo.Job(other, bipo.BipoConfig(**{**CFG, "epochs": 2, "batch_size": 3})),  # another behavior, fewer steps
    ]
    together = bipo.train_many(model, jobs, 0, progress=False)
    for job, got in zip(jobs, together):
        alone = bipo.train(model, job.pairs, job.cfg, 0, progress=False)
        assert (got.vector.layers[1] - alone.vector.layers[1]).abs().max() <= 1e-5
        assert [r["step"] for r in got.log] == [r["step"] for r in alone.log]
        assert got.log[-1]["loss"] == pytest.approx(alone.log[-1]["loss"], abs=1e-5)
        assert got.vector.meta["training"] == alone.vector.meta["training"]
    assert len(together[2].log) < len(together[0].log)  # a job that ran out of steps drops out of the batch
    with pytest.raises(TrainingError, match="share a layer"):
        bipo.train_many(model, [jobs[0], bipo.Job(enc, bipo.BipoConfig(**{**CFG, "layer": 2}))], 0, progress=False)


def test_compiled_step_equals_the_fast_one(setup, monkeypatch):
    """The compiled step (torch.compile of layers L+1.., lengths padded to few shapes) trains the same vector.

    On CPU with the aot_eager backend: the graph capture and autograd of the CUDA-graph path without a C++
    compiler; the reduce-overhead (CUDA graphs) mode itself runs in benchmarks/gpu_check.sh on a GPU.
    """
    model, enc = setup
    cfg = bipo.BipoConfig(**CFG)
    fast = bipo.train(model, enc, cfg, 0, engine="fast", progress=False)
    real = FastEngine.compile
    monkeypatch.setattr(FastEngine, "compile", lambda self, **k: real(self, backend="aot_eager", pad_to=16))
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = bipo.train(model, enc, cfg, 0, engine="compiled", progress=False)
    assert counters["stats"]["unique_graphs"] >= 1  # the step really went through torch.compile
    va, vb = fast.vector.layers[1], compiled.vector.layers[1]
    assert va.norm() > 0.05 and (va - vb).abs().max() <= 1e-5
    assert compiled.vector.meta["engine"] == "compiled"
    eng = FastEngine(model, enc, 1, 0).compile(backend="aot_eager", pad_to=16)
    assert eng.pad_to == 16 and pack(enc[:3], 0, pad_to=16).input_ids.shape[1] % 16 == 0
    assert [n for n, _ in model.named_children()] and len(model.model.layers) == 4  # the model is untouched
