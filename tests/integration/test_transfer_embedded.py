"""Transfer on the embedded SmolLM2-135M model: a quick LoRA derived from seed data, a quick CAA vector."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from steerkit.data.readers import load_pairs
from steerkit.data.texts import neutral_texts
from steerkit.eval.config import TransferConfig
from steerkit.eval.shift import KL_THRESHOLD
from steerkit.eval.transfer import (
    RETENTION_METRICS,
    transfer_report,
    write_transfer_report,
)
from steerkit.recipes import recipe_for
from steerkit.stages.derive import derive
from steerkit.stages.train import train_vector
from steerkit.train.adapter import DERIVE_JSON, load_target
from steerkit.train.config import BipoConfig

from ..conftest import REPO

pytestmark = pytest.mark.integration
SEED = REPO / "data" / "seed" / "power-seeking"


def test_lora_transfer_of_a_caa_vector(embedded, tmp_path):
    model, tok = embedded.model, embedded.tokenizer
    before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("q_proj.weight")}
    probe = neutral_texts()[:3]
    (tmp_path / "probe.txt").write_text("\n".join(probe) + "\n")
    derived = derive(
        [SEED / "train.jsonl"],
        tmp_path / "lora",
        model=embedded,
        cfg=recipe_for(embedded.name).derive,  # the recipe's 6 steps: what the pipeline's derive stage runs
        limit=24,
        probe_texts=tmp_path / "probe.txt",
    )
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)  # the shared model is untouched
    shift = derived.shift
    assert derived.moved, shift
    assert shift["ppl_change"] != 0 and shift["kl"] > KL_THRESHOLD
    assert derived.info["train"]["loss_last10_mean"] < derived.info["train"]["loss_first"]
    info = json.loads((tmp_path / "lora" / DERIVE_JSON).read_text())
    assert info["base_model"] == "smollm2-135m-instruct" and info["train"]["data"][0]["examples"] == 24

    vec, _ = train_vector(
        embedded,
        SEED / "train.jsonl",
        tmp_path / "L15.caa.safetensors",
        behavior="power-seeking",
        method="caa",
        cfg=BipoConfig(layer=15),
        limit=8,
        progress=False,
    )
    target = load_target(tmp_path / "lora", base=embedded)  # the saved adapter, on a copy of the base
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the base is steered and the target moved: no warnings
        report = transfer_report(
            model,
            {"lora": target.model},
            vec,
            load_pairs(SEED / "test.jsonl", 5),
            tok,
            TransferConfig(multipliers=(-2, 0, 2), merged=True),
            probe_texts=probe,
            base_name=embedded.name,
        )
    assert report["base"]["summary"]["margin_swing"] > 0
    for name in ("lora:unmerged", "lora:merged"):
        t = report["targets"][name]
        assert set(t["retention"]) == set(RETENTION_METRICS) | {k + "_ci95" for k in RETENTION_METRICS}
        assert t["retention"]["margin_swing"] is not None and t["retention"]["margin_swing_ci95"] is not None
        assert t["retention"]["margin_swing"] > 0.5 and t["shift"]["moved"]
    a, b = report["targets"]["lora:unmerged"]["margin"], report["targets"]["lora:merged"]["margin"]
    for x, y in zip(a, b):
        assert x["margin"] == pytest.approx(y["margin"], rel=1e-3, abs=1e-4)
    assert report["consistency"]["lora"]["max_rel_margin_diff"] < 1e-3
    json_path, png, md = write_transfer_report(report, tmp_path / "reports" / "power-seeking.caa.json")
    assert png.read_bytes()[:4] == b"\x89PNG" and "lora:merged" in md.read_text()
