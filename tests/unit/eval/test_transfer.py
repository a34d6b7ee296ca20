"""Derived models and transfer on tiny models: base untouched, B=0 LoRA is the identity, known retentions."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

from steerkit.data.pairs import ContrastivePair, write_pairs_jsonl
from steerkit.errors import DataError, ModelError, VectorError
from steerkit.eval.config import TransferConfig
from steerkit.eval.shift import KL_THRESHOLD, measure_shift
from steerkit.eval.transfer import (
    RETENTION_METRICS,
    layer_cosines,
    markdown_table,
    retention,
    transfer_report,
    write_transfer_report,
)
from steerkit.models import LoadedModel, decoder_layers
from steerkit.train.adapter import (
    DERIVE_JSON,
    adapter_base,
    ensure_same_hidden,
    load_target,
    save_adapter,
)
from steerkit.train.config import LoraConfig
from steerkit.train.derive import (
    default_target_modules,
    derive_lora,
    is_peft,
    training_examples,
)
from steerkit.vector import SteeringVector

from ...conftest import TinyTokenizer, random_pairs, tiny_model

PROBE = ["the quick brown fox jumps over the lazy dog", "a plain sentence with some words in it"]
LAST = 3


@pytest.fixture
def tiny():
    return tiny_model("llama"), TinyTokenizer()


def toy_vector(scale: float = 0.3, layer: int = LAST, seed: int = 3) -> SteeringVector:
    v = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    return SteeringVector({layer: v / v.norm() * scale}, {"behavior": "toy", "method": "bipo", "model": "tiny"})


def toy_pairs(n: int = 8, seed: int = 0) -> list[ContrastivePair]:
    """Random questions; the matching answer is "aaa", the other "hhh" (see ``steering_vector``)."""
    return [ContrastivePair(p.question, "aaa", "hhh", id=p.id) for p in random_pairs(n, seed)]


def steering_vector(model, tok, scale: float = 0.5, layer: int = LAST) -> SteeringVector:
    """Last-layer vector along W_a − W_h of the LM head: it steers ``toy_pairs`` towards "aaa"."""
    W = model.get_output_embeddings().weight
    d = W[tok("a")["input_ids"][0]] - W[tok("h")["input_ids"][0]]
    return SteeringVector({layer: d / d.norm() * scale}, {"behavior": "toy", "method": "bipo", "model": "tiny"})


def derive(model, tok, steps=6, lr=3e-2, out_dir=None, base_name=None):
    """A LoRA derivative of a few pairs, its shift measured on PROBE, saved to ``out_dir`` (the derive stage's way)."""
    examples = training_examples(random_pairs(8, seed=5), tok)
    derived = derive_lora(model, tok, examples, LoraConfig(steps=steps, lr=lr, batch_size=2), base_name=base_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        measure_shift(derived, model, PROBE)
    if out_dir is not None:
        save_adapter(derived, out_dir)
    return derived


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------- derive
def test_derive_leaves_the_base_model_untouched(tiny, tmp_path):
    model, tok = tiny
    before = snapshot(model)
    names_before = [n for n, _ in model.named_modules()]
    derived = derive(model, tok, out_dir=tmp_path / "adapter", base_name="tiny")
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [n for n, _ in model.named_modules()] == names_before  # no LoRA layers injected into the base
    assert not any(p.requires_grad for p in model.parameters())
    # ... while the derived copy did change
    assert derived.moved and derived.shift["kl"] > KL_THRESHOLD
    assert derived.info["train"]["loss_last10_mean"] < derived.info["train"]["loss_first"]
    lora = {n for n, p in derived.model.named_parameters() if "lora_B" in n}
    assert lora and any(derived.model.get_parameter(n).abs().sum() > 0 for n in lora)
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", DERIVE_JSON} <= files
    info = json.loads((tmp_path / "adapter" / DERIVE_JSON).read_text())
    assert (
        info["base_model"] == "tiny"
        and info["moved"] is True
        and info["lora"]["target_modules"] == ["q_proj", "v_proj"]
    )
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"


def test_zero_steps_lora_is_the_identity_and_flagged_unmoved(tiny):
    model, tok = tiny
    derived = derive_lora(model, tok, ["some text to train on"], LoraConfig(steps=0))
    with pytest.warns(UserWarning, match="barely moved"):
        measure_shift(derived, model, PROBE)
    assert derived.shift["kl"] == 0.0 and derived.shift["ppl_change"] == 0.0 and derived.moved is False
    vec, pairs = steering_vector(model, tok), toy_pairs(6)
    with pytest.warns(UserWarning, match="has not moved"):
        report = transfer_report(
            model, {"lora": derived.model}, vec, pairs, tok, TransferConfig(merged=True), probe_texts=PROBE
        )
    assert set(report["targets"]) == {"lora:unmerged", "lora:merged"}
    for name in report["targets"]:
        assert report["retention"][name]["margin_swing"] == 1.0  # exactly: B = 0 adds exact zeros
        assert report["targets"][name]["margin"] == report["base"]["margin"]
        assert report["targets"][name]["shift"]["moved"] is False
    assert report["consistency"]["lora"]["max_rel_margin_diff"] == 0.0
    assert any("has not moved" in w for w in report["warnings"])


def test_derived_seed_is_reproducible(tiny):
    model, tok = tiny
    a, b = derive(model, tok, steps=2), derive(model, tok, steps=2)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if "lora" in k)
    assert a.shift == b.shift


@pytest.mark.parametrize(
    "arch,modules",
    [("llama", ["q_proj", "v_proj"]), ("gpt2", ["c_attn"]), ("gpt_neox", ["query_key_value"]), ("phi3", ["qkv_proj"])],
)
def test_default_target_modules_per_architecture(arch, modules):
    assert default_target_modules(tiny_model(arch)) == modules


def test_gpt2_lora_unmerged_equals_merged():
    model, tok = tiny_model("gpt2"), TinyTokenizer()
    derived = derive(model, tok, steps=3)
    assert derived.moved
    report = transfer_report(
        model,
        {"d": derived.model},
        steering_vector(model, tok, layer=2),
        toy_pairs(4),
        tok,
        TransferConfig(merged=True),
        probe_texts=PROBE,
    )
    assert report["consistency"]["d"]["max_rel_margin_diff"] < 1e-4


def test_no_attention_projections_is_a_clear_error():
    with pytest.raises(ModelError, match="target_modules"):
        default_target_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_bad_settings_are_refused(tiny):
    model, tok = tiny
    with pytest.raises(DataError):
        derive_lora(model, tok, [], LoraConfig(steps=3))
    with pytest.raises(Exception, match="steps"):
        derive_lora(model, tok, ["abc def"], LoraConfig(steps=-1))


# ----------------------------------------------------------------------------------- targets
def test_saved_adapter_loads_onto_the_base_and_matches(tiny, tmp_path):
    model, tok = tiny
    derived = derive(model, tok, out_dir=tmp_path / "ad", base_name="tiny")
    base = LoadedModel(model, tok, "tiny", "test")
    target = load_target(tmp_path / "ad", base=base)
    assert target.source == "lora" and is_peft(target.model)
    ids = torch.tensor([[5, 9, 13, 40, 22]])
    with torch.no_grad():
        assert torch.allclose(target.model(input_ids=ids).logits, derived.model(input_ids=ids).logits, atol=1e-6)
        assert not torch.allclose(model(input_ids=ids).logits, derived.model(input_ids=ids).logits, atol=1e-4)
    assert adapter_base(tmp_path / "ad") == "tiny"
    assert all(not n.endswith("lora_A") for n, _ in model.named_modules())  # base still untouched


def test_adapter_without_base_name_is_a_clear_error(tiny, tmp_path):
    model, tok = tiny
    derived = derive(model, tok, steps=1, out_dir=tmp_path / "ad")
    (tmp_path / "ad" / DERIVE_JSON).unlink()
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (tmp_path / "ad" / "adapter_config.json").write_text(json.dumps(cfg))
    assert derived.adapter_dir == tmp_path / "ad"
    with pytest.raises(ModelError, match="base model"):
        load_target(tmp_path / "ad")


def test_hidden_size_mismatch_names_both_sizes(tiny):
    model, tok = tiny
    wide = tiny_model("llama", hidden_size=64)
    with pytest.raises(VectorError, match=r"hidden size 64.*has 32"):
        transfer_report(model, {"wide": wide}, toy_vector(), random_pairs(4), tok, shift=False)
    with pytest.raises(VectorError, match="64"):
        ensure_same_hidden(model, wide, "base", "wide")


# ---------------------------------------------------------------------------------- transfer
def test_transfer_report_on_a_moved_lora(tiny):
    model, tok = tiny
    derived = derive(model, tok)
    vec = steering_vector(model, tok)
    report = transfer_report(
        model,
        {"lora": derived.model},
        vec,
        toy_pairs(8),
        tok,
        TransferConfig(multipliers=(-2, 0, 2), merged=True),
        direct_vector=vec,
        probe_texts=PROBE,
    )
    assert report["multipliers"] == [-2.0, 0.0, 2.0] and report["n_test"] == 8 and not report["warnings"]
    base = report["base"]["summary"]["margin_swing"]
    assert base > 0 and report["base"]["summary"]["win_swing"] > 0
    for name in ("lora:unmerged", "lora:merged"):
        t = report["targets"][name]
        assert t["retention"]["margin_swing"] == pytest.approx(t["summary"]["margin_swing"] / base)
        assert t["shift"]["moved"] and t["retention"]["margin_swing"] != 1.0
    assert report["consistency"]["lora"]["max_rel_margin_diff"] < 1e-4
    assert report["direct_cosine"]["per_layer"] == {str(LAST): pytest.approx(1.0)}
    assert not decoder_layers(model)[LAST]._forward_hooks  # vectors removed again
    # base and targets can be written out: JSON + retention bar chart + markdown table
    md = markdown_table(report)
    assert "lora:merged" in md and md.count("\n") == 5


def test_transfer_without_merging_and_to_a_plain_model(tiny):
    model, tok = tiny
    other = tiny_model("llama", seed=1)
    report = transfer_report(
        model,
        {"sibling": other},
        steering_vector(model, tok),
        toy_pairs(4),
        tok,
        TransferConfig(merged=False),
        probe_texts=PROBE,
    )
    assert list(report["targets"]) == ["sibling"] and report["targets"]["sibling"]["kind"] == "model"
    assert report["targets"]["sibling"]["shift"]["moved"]


def test_a_target_wrapping_the_base_itself_is_refused(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ModelError, match="base model itself"):
        transfer_report(model, {"same": wrapped}, steering_vector(model, tok), toy_pairs(2), tok, shift=False)


def test_layer_cosines():
    a = SteeringVector({1: torch.tensor([1.0, 0, 0]), 2: torch.tensor([1.0, 1, 0])})
    b = SteeringVector({2: torch.tensor([0.0, 0, 3]), 3: torch.tensor([1.0, 0, 0])})
    assert layer_cosines(a, b) == {"shared_layers": [2], "per_layer": {"2": 0.0}, "mean": 0.0}
    assert layer_cosines(a, a * -2)["mean"] == pytest.approx(-1.0)
    assert layer_cosines(a, SteeringVector({5: torch.ones(3)}))["per_layer"] == {}
    with pytest.raises(VectorError):
        layer_cosines(a, SteeringVector({1: torch.ones(4)}))


def _rows(low: list[float], high: list[float]) -> list[dict]:
    return [
        {"multiplier": m, "margins": v, "margins_per_token": [x / 10 for x in v]} for m, v in ((-1.0, low), (1.0, high))
    ]


def test_retention_is_a_paired_ratio_and_none_without_a_base_effect():
    base = _rows([-1.0, -2.0, -1.5, -0.5], [1.0, 2.0, 1.5, 0.5])  # swings 2, 4, 3, 1; every pair flips
    target = _rows([-0.5, -1.0, -0.75, -0.25], [0.5, 1.0, 0.75, 0.25])  # half of each
    r = retention(target, base)
    assert r["margin_swing"] == pytest.approx(0.5) and r["margin_swing_ci95"] == pytest.approx([0.5, 0.5])
    assert r["win_swing"] == pytest.approx(1.0)  # every pair still flips
    flat = _rows([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0])  # the base does not move: nothing to retain
    assert retention(target, flat)["margin_swing"] is None and retention(target, flat)["margin_swing_ci95"] is None


def test_write_transfer_report(tiny, tmp_path):
    model, tok = tiny
    report = transfer_report(
        model, {"sib": tiny_model("llama", seed=2)}, steering_vector(model, tok), toy_pairs(4), tok, shift=False
    )
    j, png, md = write_transfer_report(report, tmp_path / "r" / "toy.json")
    kept = json.loads(j.read_text())["retention"]["sib"]
    assert kept.keys() == set(RETENTION_METRICS) | {k + "_ci95" for k in RETENTION_METRICS}
    assert png.read_bytes()[:4] == b"\x89PNG" and md.read_text().startswith("| model |")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["toy.json", "toy.md", "toy.png"]


# ---------------------------------------------------------------------------------------- CLI
def test_cli_derive_then_transfer(tiny, tmp_path, monkeypatch):
    from steerkit.cli import app

    model, tok = tiny
    fake = lambda spec="tiny", **_: LoadedModel(model, tok, "tiny", "test")
    monkeypatch.setattr("steerkit.models.load_model", fake)
    monkeypatch.setattr("steerkit.stages.transfer.load_model", fake)
    monkeypatch.chdir(tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    write_pairs_jsonl(pairs, toy_pairs(6))
    probe = tmp_path / "probe.txt"
    probe.write_text("\n".join(PROBE) + "\n")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "derive",
            "lora",
            "--model",
            "tiny",
            "--data",
            str(pairs),
            "--steps",
            "4",
            "--lr",
            "3e-2",
            "--out",
            "adapters/tiny-lora",
            "--probe-texts",
            str(probe),
            "--report",
            "reports/derive.json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "moved" in res.output and json.loads((tmp_path / "reports" / "derive.json").read_text())["moved"]
    steering_vector(model, tok).save(tmp_path / "v.safetensors")
    res = runner.invoke(
        app,
        [
            "transfer",
            "--vector",
            "v.safetensors",
            "--target",
            "adapters/tiny-lora",
            "--test",
            str(pairs),
            "--limit",
            "4",
            "--probe-texts",
            str(probe),
            "--direct-vector",
            "v.safetensors",
            "--merged",
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports" / "transfer" / "tiny" / "toy.json"
    report = json.loads(out.read_text())
    assert set(report["retention"]) == {"tiny-lora:unmerged", "tiny-lora:merged"} and report["n_test"] == 4
    assert out.with_suffix(".png").exists() and out.with_suffix(".md").exists()
    assert report["base"]["name"] == "tiny" and report["direct_cosine"]["mean"] == pytest.approx(1.0)
    # zero steps: the derived model does not move; --require-moved makes that an error
    res = runner.invoke(
        app,
        [
            "derive",
            "lora",
            "--data",
            str(pairs),
            "--steps",
            "0",
            "--out",
            "adapters/still",
            "--probe-texts",
            str(probe),
            "--require-moved",
        ],
    )
    assert res.exit_code == 3 and "did not move" in res.output


def test_cli_transfer_errors_are_one_clear_message(tmp_path):
    from steerkit.cli import app

    res = CliRunner().invoke(
        app,
        [
            "transfer",
            "--vector",
            str(tmp_path / "missing.safetensors"),
            "--target",
            "x",
            "--test",
            str(tmp_path / "t.jsonl"),
        ],
    )
    assert res.exit_code == 2 and "vector file not found" in res.output
