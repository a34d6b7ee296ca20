"""Composition on a tiny llama with vectors whose effect is known by construction.

The LM head turns the last layer's output h into logits W·norm(h). A pair whose answers are the
single letters X and Y (packed as " X" / " Y": the space token is shared) has margin
logit_X − logit_Y = (W_X − W_Y)·norm(h) at one position, the softmax normaliser cancelling. A
last-layer vector along (W_X − W_Y), made orthogonal to (W_P − W_Q), moves the X/Y margin and
leaves the P/Q margin alone (up to the norm's rescaling): two behaviors that do not interfere.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerkit.cli.options import behavior_files
from steerkit.data.pairs import ContrastivePair, write_pairs_jsonl
from steerkit.errors import DataError, VectorError
from steerkit.eval import compose as co
from steerkit.eval.config import ComposeConfig
from steerkit.models import LoadedModel, decoder_layers
from steerkit.stages.compose import combo_name, run_case
from steerkit.vector import SteeringVector

from ...conftest import TinyTokenizer, tiny_model

LAST = 3


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama"), TinyTokenizer()


def letter_pairs(good: str, bad: str, n: int = 6, seed: int = 0) -> list[ContrastivePair]:
    r = random.Random(seed)
    return [
        ContrastivePair("".join(r.choice("abcdefgh ") for _ in range(r.randint(5, 20))), good, bad, id=str(i))
        for i in range(n)
    ]


def head_row(model, tok, letter: str) -> torch.Tensor:
    return model.get_output_embeddings().weight[tok(letter)["input_ids"][0]].detach()


def orthogonal_vectors(model, tok, scale: float) -> tuple[SteeringVector, SteeringVector]:
    u1 = head_row(model, tok, "x") - head_row(model, tok, "y")
    u2 = head_row(model, tok, "p") - head_row(model, tok, "q")
    d1 = u1 - (u1 @ u2) / (u2 @ u2) * u2  # ⟂ u2: no first-order effect on the p/q margin
    d2 = u2 - (u2 @ u1) / (u1 @ u1) * u1
    return (
        SteeringVector({LAST: d1 / d1.norm() * scale}, {"behavior": "xy", "method": "bipo"}),
        SteeringVector({LAST: d2 / d2.norm() * scale}, {"behavior": "pq", "method": "bipo"}),
    )


TESTS = {"xy": letter_pairs("x", "y", seed=1), "pq": letter_pairs("p", "q", seed=2)}


@pytest.mark.parametrize("scale", [0.05, 1.0])
def test_orthogonal_vectors_do_not_interfere(tiny, scale):
    model, tok = tiny
    v1, v2 = orthogonal_vectors(model, tok, scale)
    report = co.compose_report(model, tok, [v1, v2], TESTS)
    assert report["columns"] == ["xy", "pq", "combination"] and report["own"] == {"xy": "xy", "pq": "pq"}
    m = report["matrix"]
    assert m["xy"]["xy"] > 0 and m["pq"]["pq"] > 0  # each steers its own behavior
    for b in ("xy", "pq"):
        assert report["kept"][b] >= 0.9 and report["kept"][b] == pytest.approx(1.0, abs=0.02)
        assert all(abs(c) < 0.05 for c in report["cross_talk"][b].values())
    assert abs(m["xy"]["pq"]) < 0.05 * m["xy"]["xy"] and abs(m["pq"]["xy"]) < 0.05 * m["pq"]["pq"]
    assert all(not layer._forward_hooks for layer in decoder_layers(model))


def test_a_vector_and_its_negation_cancel_exactly(tiny):
    model, tok = tiny
    v1, _ = orthogonal_vectors(model, tok, 0.5)
    report = co.compose_report(model, tok, [v1, v1], TESTS, [1.0, -1.0])
    assert report["columns"] == ["xy", "xy@-1", "combination"]
    assert report["matrix"]["xy"]["combination"] == 0.0 and report["matrix"]["pq"]["combination"] == 0.0
    assert report["kept"] == {"xy": 0.0, "pq": None}  # pq has no vector of its own
    assert report["matrix"]["xy"]["xy@-1"] == pytest.approx(-report["matrix"]["xy"]["xy"], rel=1e-5)
    zero = report["curves"]["xy"]["combination"]
    assert len({r["margin"] for r in zero}) == 1  # the zero vector leaves every multiplier's margin unchanged


def test_negation_at_half_weight_keeps_half(tiny):
    """The paper-cases control: v + (−0.5)·v = 0.5·v; in the linear regime kept = 0.5."""
    model, tok = tiny
    v1, _ = orthogonal_vectors(model, tok, 0.01)
    report = co.compose_report(model, tok, [v1, v1], {"xy": TESTS["xy"]}, [1.0, -0.5])
    assert report["kept"]["xy"] == pytest.approx(0.5, abs=0.02)
    assert report["cross_talk"]["xy"]["xy@-0.5"] == pytest.approx(-0.5, abs=0.02)


def test_vectors_at_different_layers_and_fluency(tiny):
    model, tok = tiny
    a = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(1)) * 0.2}, {"behavior": "xy"})
    b = SteeringVector({LAST: torch.randn(32, generator=torch.Generator().manual_seed(2)) * 0.2}, {"behavior": "pq"})
    report = co.compose_report(
        model,
        tok,
        [a, b],
        TESTS,
        [2.0, 0.5],
        ComposeConfig(multipliers=(-1, 1), fluency=True),
        texts=["plain words for perplexity", "more plain text here"],
    )
    assert report["combination"]["layers"] == [1, LAST] and report["multipliers"] == [-1.0, 1.0]
    assert [v["weight"] for v in report["vectors"]] == [2.0, 0.5]
    cost = report["fluency"]["cost"]
    assert set(cost) == {"xy", "pq", "combination"} and report["fluency"]["cost_at"] in (-1.0, 1.0)
    assert all(r["fluency_cost"] == 0.0 for r in report["fluency"]["curves"]["xy"] if r["multiplier"] == 0.0)


def test_bad_inputs(tiny):
    model, tok = tiny
    v1, v2 = orthogonal_vectors(model, tok, 0.1)
    with pytest.raises(VectorError, match="2 vectors but 1 weights"):
        co.compose_report(model, tok, [v1, v2], TESTS, [1.0])
    with pytest.raises(VectorError):
        co.compose_report(model, tok, [], TESTS)
    with pytest.raises(DataError):
        co.compose_report(model, tok, [v1], {})
    with pytest.raises(VectorError, match="hidden size"):
        co.compose_report(model, tok, [SteeringVector({1: torch.ones(8)})], TESTS)
    with pytest.raises(DataError, match="unique"):
        co.compose_report(model, tok, [v1, v2], TESTS, names=["a", "a"])


def test_write_report_and_markdown(tiny, tmp_path):
    model, tok = tiny
    v1, v2 = orthogonal_vectors(model, tok, 0.2)
    report = co.compose_report(model, tok, [v1, v2], TESTS)
    j, png = co.write_compose_report(report, tmp_path / "c" / "xy__pq.json")
    assert json.loads(j.read_text())["kept"].keys() == {"xy", "pq"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    md = co.markdown_table(report)
    assert md.splitlines()[0] == "| behavior | xy | pq | combination | kept |" and len(md.splitlines()) == 4


def test_paper_cases_and_names(tmp_path):
    cases = {c.name: c for c in co.paper_cases()}
    assert set(cases) == {"power-wealth", "power-self-negation"}
    pw, neg = cases["power-wealth"], cases["power-self-negation"]
    assert pw.behaviors == ("power-seeking", "wealth-seeking") and pw.weights == [1.0, 1.0]
    assert neg.weights == [1.0, -0.5] and neg.names() == ["power-seeking", "power-seeking@-0.5"]
    assert [p.as_posix() for p in pw.vector_paths("r", "smollm2-135m-instruct", 15)] == [
        "r/vectors/smollm2-135m-instruct/power-seeking/L15.safetensors",
        "r/vectors/smollm2-135m-instruct/wealth-seeking/L15.safetensors",
    ]
    assert pw.test_paths("r")["wealth-seeking"].as_posix() == "r/data/pairs/wealth-seeking/test.jsonl"
    assert (
        neg.out_path("r", "smollm2-135m-instruct").as_posix()
        == "r/reports/compose/smollm2-135m-instruct/power-self-negation.json"
    )
    assert combo_name(["power-seeking", "power-seeking@-0.5"], [1, -0.5]) == "power-seeking__power-seeking.w-0.5"
    with pytest.raises(DataError, match="unknown composition case"):
        co.get_case("nope")
    assert behavior_files(["a=x.jsonl", "b = y.jsonl"], "--test") == {"a": Path("x.jsonl"), "b": Path("y.jsonl")}
    for bad in (["a"], ["=x"], ["a=x", "a=y"]):
        with pytest.raises(DataError, match="--test"):
            behavior_files(bad, "--test")


def test_cli_compose(tiny, tmp_path, monkeypatch):
    from steerkit.cli import app

    model, tok = tiny
    monkeypatch.setattr(
        "steerkit.stages.compose.load_model", lambda spec="tiny", **_: LoadedModel(model, tok, "tiny", "test")
    )
    monkeypatch.chdir(tmp_path)
    v1, v2 = orthogonal_vectors(model, tok, 0.2)
    v1.save("xy.safetensors")
    v2.save("pq.safetensors")
    write_pairs_jsonl(tmp_path / "xy.jsonl", TESTS["xy"])
    write_pairs_jsonl(tmp_path / "pq.jsonl", TESTS["pq"])
    probe = tmp_path / "probe.txt"
    probe.write_text("plain words for perplexity\n")
    res = CliRunner().invoke(
        app,
        [
            "compose",
            "--vector",
            "xy.safetensors",
            "--vector",
            "pq.safetensors",
            "--weight",
            "1",
            "--weight",
            "-0.5",
            "--test",
            "xy=xy.jsonl",
            "--test",
            "pq=pq.jsonl",
            "--probe-texts",
            str(probe),
            "--limit",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports" / "compose" / "tiny" / "xy__pq.w-0.5.json"
    report = json.loads(out.read_text())
    assert report["n_test"] == {"xy": 4, "pq": 4} and [v["weight"] for v in report["vectors"]] == [1.0, -0.5]
    assert report["matrix"]["pq"]["pq"] < 0 < report["matrix"]["xy"]["xy"]  # pq applied at a negative weight
    assert out.with_suffix(".png").exists() and "| xy |" in res.output
    res = CliRunner().invoke(app, ["compose", "--case", "power-wealth", "--vector", "xy.safetensors"])
    assert res.exit_code == 2 and "either --case" in res.output


def test_run_paper_case_from_the_layout(tiny, tmp_path):
    model, tok = tiny
    v1, _ = orthogonal_vectors(model, tok, 0.01)
    case = co.get_case("power-self-negation")
    lm = LoadedModel(model, tok, "tiny", "test")
    for path in case.vector_paths(tmp_path, "tiny", LAST):
        v1.save(path)
    for path in case.test_paths(tmp_path).values():
        write_pairs_jsonl(path, TESTS["xy"])
    res = run_case(case, tmp_path, lm, layer=LAST, limit=3)
    assert res.json == tmp_path / "reports" / "compose" / "tiny" / "power-self-negation.json"
    assert res.report["columns"] == ["power-seeking", "power-seeking@-0.5", "combination"]
    assert res.report["kept"]["power-seeking"] == pytest.approx(0.5, abs=0.02)
