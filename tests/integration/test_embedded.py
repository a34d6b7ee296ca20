"""The embedded SmolLM2-135M model: loading, exact fast BiPO, steering, the CLI end to end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.data.readers import load_pairs
from steerkit.generate import generate
from steerkit.models import decoder_layers, hidden_size
from steerkit.packing import encode_pairs
from steerkit.train import bipo
from steerkit.vector import SteeringVector

from ..conftest import REPO

pytestmark = pytest.mark.integration
SEED = REPO / "data" / "seed" / "power-seeking"


def mirror() -> Path:
    path = Path(os.environ.get("STEERKIT_DATA_MIRROR") or REPO.parent / "shared" / "datasets")
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"dataset mirror {path} missing in CI")
        pytest.skip("no dataset mirror here")
    return path


def test_embedded_model_shape(embedded):
    assert type(embedded.model).__name__ == "LlamaForCausalLM"
    assert len(decoder_layers(embedded.model)) == 30 and hidden_size(embedded.model) == 576
    assert embedded.source == "embedded"
    assert not any(p.requires_grad for p in embedded.model.parameters())
    assert "<|im_start|>assistant" in embedded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


def test_fast_equals_plain_on_embedded_model(embedded):
    enc = encode_pairs(embedded.tokenizer, load_pairs(SEED / "train.jsonl", limit=6))
    cfg = bipo.BipoConfig(layer=15, epochs=1, batch_size=1, warmup_steps=2, lr=5e-3)
    pad = embedded.tokenizer.pad_token_id
    a = bipo.train(embedded.model, enc, cfg, pad, engine="plain", progress=False)
    b = bipo.train(embedded.model, enc, cfg, pad, engine="fast", progress=False)
    assert len(a.log) == len(b.log) == 6
    assert a.vector.norm() > 0.01
    assert float((a.vector.layers[15] - b.vector.layers[15]).abs().max()) <= 1e-5


def test_steering_changes_generation_and_removes_itself(embedded):
    vec = SteeringVector({15: torch.randn(576, generator=torch.Generator().manual_seed(0))})
    prompt = ["Would you like to be in charge of the whole company?"]
    base = generate(embedded.model, embedded.tokenizer, prompt, max_new_tokens=12)
    with vec.apply(embedded.model, 0.0):
        assert generate(embedded.model, embedded.tokenizer, prompt, max_new_tokens=12) == base
    with vec.apply(embedded.model, 8.0):
        steered = generate(embedded.model, embedded.tokenizer, prompt, max_new_tokens=12)
    assert steered != base
    assert generate(embedded.model, embedded.tokenizer, prompt, max_new_tokens=12) == base


def test_cli_train_on_shared_bipo_behavior_writes_a_self_describing_vector(tmp_path):
    data = mirror() / "bipo" / "power-seeking" / "train.csv"
    out = tmp_path / "L15.safetensors"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "-d",
            str(data),
            "-b",
            "power-seeking",
            "-o",
            str(out),
            "--limit",
            "12",
            "--epochs",
            "1",
            "--lr",
            "5e-3",
            "--warmup-steps",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    vec = SteeringVector.load(out)
    m = vec.meta
    assert m["behavior"] == "power-seeking" and m["method"] == "bipo" and m["layer"] == 15
    assert m["model"] == "smollm2-135m-instruct" and m["hidden_size"] == 576 and m["num_layers"] == 30
    assert m["training"]["lr"] == 5e-3 and m["training"]["beta"] == 0.1 and m["n_pairs"] == 12
    assert len(m["data_sha256"]) == 64 and m["data_file"].endswith("train.csv") and m["engine"] == "fast"
    assert out.with_suffix(".log.csv").read_text().count("\n") == 1 + 3  # header + 3 steps
    assert not out.with_suffix(".ckpt").exists()
    # the embedded model's recipe, and what the options changed (lr 5e-3 is the recipe's own)
    assert m["recipe"] == {"name": "smollm2-135m-instruct", "overrides": {"epochs": 1, "warmup_steps": 1}}


def test_demo_summary_runs(tmp_path):
    import shutil

    shutil.copytree(REPO / "data" / "seed", tmp_path / "data" / "seed")
    for name in ("params.yaml", "dvc.yaml"):  # a project with the pipeline: the tour must keep out of its outputs
        shutil.copy(REPO / name, tmp_path / name)
    res = CliRunner().invoke(app, ["demo", "--no-train", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "power-seeking" in res.output and "wealth-seeking" in res.output and "30 layers" in res.output
    assert (tmp_path / "demo" / "data" / "pairs" / "power-seeking" / "train.jsonl").exists()
    assert not (tmp_path / "data" / "pairs").exists()  # the pipeline's prepare output, untouched


def test_cli_calibrate_records_layer_and_safe_range(tmp_path):
    out = tmp_path / "cal.safetensors"
    texts = tmp_path / "texts.txt"  # the fluency cost and the safe range: four neutral texts are enough here
    texts.write_text("\n".join((REPO / "steerkit/data/neutral.txt").read_text().splitlines()[:4]) + "\n")
    res = CliRunner().invoke(
        app,
        [
            "calibrate",
            "-d",
            str(SEED / "train.jsonl"),
            "-b",
            "power-seeking",
            "-o",
            str(out),
            "--limit",
            "9",
            "--layers",
            "20,25",  # late layers: fewer layers run per step, the same code path as any others
            "--epochs",
            "1",
            "--val-fraction",
            "0.34",
            "--texts",
            str(texts),
        ],
    )
    assert res.exit_code == 0, res.output
    meta = SteeringVector.load(out).meta
    chosen = meta["calibration"]["chosen"]
    assert chosen["layer"] in (20, 25) and meta["layer"] == chosen["layer"]
    assert [c["layer"] for c in meta["calibration"]["candidates"]] == [20, 25]
    lo, hi = meta["safe_multipliers"]
    assert lo == -hi and hi >= 0
    assert out.with_suffix(".calibration.json").exists()
