"""Files a user holds from steerkit 0.1 (before the "One house" redesign) still load and behave the same.

The fixtures were written by that version (tests/fixtures/legacy-0.1/README.md says how).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from steerkit.catalog import Catalog
from steerkit.export import from_llamacpp_gguf
from steerkit.packing import encode_pairs
from steerkit.train import bipo
from steerkit.train.config import BipoConfig
from steerkit.vector import SteeringVector

from ..conftest import REPO, TinyTokenizer, random_pairs, tiny_model

LEGACY = REPO / "tests" / "fixtures" / "legacy-0.1"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def test_a_0_1_vector_loads_with_its_metadata():
    vec = SteeringVector.load(LEGACY / "project/vectors/tiny-llama/power-seeking/L1.safetensors")
    assert vec.layer_ids == [1] and vec.hidden_size == 32
    assert vec.meta["behavior"] == "power-seeking" and vec.meta["method"] == "bipo"
    assert vec.meta["training"] == {**EXPECTED["config"], "beta": 0.1, "weight_decay": 0.05, "bucket": True}
    assert torch.allclose(vec.layers[1], torch.tensor(EXPECTED["resumed_vector"]), atol=1e-6)


def test_a_0_1_catalog_opens_and_loads_verified(tmp_path):
    shutil.copytree(LEGACY / "project", tmp_path / "project")
    catalog = Catalog.open(tmp_path / "project")
    assert len(catalog) == 2
    entry = catalog.find("power-seeking", model="tiny-llama")
    assert entry.safe_multiplier_range == [-2.0, 2.0] and entry.metrics["margin_swing"] == 1.25
    assert catalog.load(entry).layer_ids == [1]  # sha256 verified against the 0.1 entry
    assert catalog.find("power-seeking", method="caa").path.endswith("L1.caa.safetensors")


def test_a_0_1_checkpoint_resumes_to_the_uninterrupted_vector(tmp_path):
    ckpt = tmp_path / "L1.ckpt"
    shutil.copy(LEGACY / "L1.ckpt", ckpt)
    model, tok = tiny_model("llama"), TinyTokenizer()
    enc = encode_pairs(tok, random_pairs(12, seed=3))
    cfg = BipoConfig(**EXPECTED["config"])
    result = bipo.train(
        model, enc, cfg, tok.pad_token_id, model_name="tiny-llama", progress=False, checkpoint=ckpt, resume=True
    )
    assert result.log[0]["step"] == 1 and len(result.log) == 6  # the log of the 3 steps before is kept
    assert torch.allclose(result.vector.layers[1], torch.tensor(EXPECTED["resumed_vector"]), atol=1e-5)


def test_a_0_1_gguf_export_reads_back():
    gguf = from_llamacpp_gguf(LEGACY / "L1.gguf")
    vec = SteeringVector.load(LEGACY / "project/vectors/tiny-llama/power-seeking/L1.safetensors")
    assert gguf.layer_ids == [1] and torch.allclose(gguf.layers[1], vec.layers[1])


@pytest.mark.parametrize("changed", [{"lr": 0.02}, {"epochs": 3}])
def test_a_0_1_checkpoint_refuses_other_parameters(tmp_path, changed):
    from steerkit.errors import TrainingError

    ckpt = tmp_path / "L1.ckpt"
    shutil.copy(LEGACY / "L1.ckpt", ckpt)
    model, tok = tiny_model("llama"), TinyTokenizer()
    cfg = BipoConfig(**{**EXPECTED["config"], **changed})
    with pytest.raises(TrainingError, match="other parameters"):
        bipo.train(
            model,
            encode_pairs(tok, random_pairs(12, seed=3)),
            cfg,
            tok.pad_token_id,
            progress=False,
            checkpoint=ckpt,
            resume=True,
        )
