"""Evaluation curves on tiny models: exact against independent computations, and known answers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from steerkit.data.pairs import ContrastivePair
from steerkit.data.texts import neutral_texts
from steerkit.errors import DataError, VectorError
from steerkit.eval.ab import (
    ab_curve,
    ab_item,
    ab_probabilities,
    encode_ab,
    letter_token_ids,
)
from steerkit.eval.config import EvalConfig
from steerkit.eval.curves import (
    as_multipliers,
    margin_curve,
    open_ended_curve,
    perplexity_curve,
    text_nll,
)
from steerkit.eval.report import (
    evaluate_vector,
    plot_report,
    scale_to_norm,
    summarize,
    write_report,
)
from steerkit.generate import Generation
from steerkit.models import decoder_layers
from steerkit.packing import encode_pairs
from steerkit.train.engines import PlainEngine
from steerkit.vector import SteeringVector

from ...conftest import TinyTokenizer, tiny_model
from ...conftest import random_pairs as _random_pairs

LAST = 3  # the tiny llama has 4 layers


def random_pairs(n: int = 10, seed: int = 0) -> list[ContrastivePair]:
    return _random_pairs(n, seed)


def head_direction(model, tok, good: str, bad: str, scale: float = 0.1) -> SteeringVector:
    """A last-layer vector along W_good − W_bad of the LM head: it raises good's logit over bad's."""
    W = model.get_output_embeddings().weight
    d = W[tok(good)["input_ids"][0]] - W[tok(bad)["input_ids"][0]]
    return SteeringVector({LAST: d / d.norm() * scale}, {"behavior": "toy", "method": "bipo", "layer": LAST})


def sharpened(model):
    """Scale the final norm so the LM head's logits are far apart (the direction is unchanged)."""
    with torch.no_grad():
        model.model.norm.weight.mul_(20.0)
    return model


@pytest.fixture
def tiny():
    return tiny_model("llama"), TinyTokenizer()


def no_hooks_left(model) -> bool:
    return all(not layer._forward_hooks for layer in decoder_layers(model))


# ------------------------------------------------------------------------------------ multipliers
def test_default_multipliers_are_what_the_cli_shows_and_uses():
    from typer.main import get_command

    from steerkit.cli import app

    assert EvalConfig().multipliers == (-2, -1, 0, 1, 2)
    option = next(p for p in get_command(app).get_command(None, "evaluate").params if p.name == "multipliers")
    assert option.default is None and option.show_default == "-2 -1 0 1 2"  # None = not given: EvalConfig's


@pytest.mark.parametrize("bad", [[float("nan")], [1, float("inf")], ["two"], [None], []])
def test_multipliers_must_be_finite_numbers(bad):
    with pytest.raises(VectorError):
        as_multipliers(bad)


def test_multipliers_sorted_and_deduplicated():
    assert as_multipliers([2, "-1", 0, 2.0, -0.5]) == [-1.0, -0.5, 0.0, 2.0]


# ---------------------------------------------------------------------------------------- margins
def test_margin_curve_equals_the_plain_engine(tiny):
    """m = 0 and m = 1 equal margins computed one sequence at a time by the BiPO oracle."""
    model, tok = tiny
    pairs = random_pairs(10)
    v = torch.randn(32, generator=torch.Generator().manual_seed(3)) * 0.2
    vec = SteeringVector({1: v})
    rows = margin_curve(model, tok, pairs, vec, [1, 0], batch_size=3)
    assert [r["multiplier"] for r in rows] == [0.0, 1.0]
    enc = encode_pairs(tok, pairs)
    eng = PlainEngine(model, enc, 1, tok.pad_token_id)
    n_pos = torch.tensor([len(e.matching) for e in enc], dtype=torch.float32)
    n_neg = torch.tensor([len(e.not_matching) for e in enc], dtype=torch.float32)
    with torch.no_grad():
        ref = {0.0: eng.ref_logps(range(10)), 1.0: eng.logps(range(10), v)}
    for row in rows:
        pos, neg = ref[row["multiplier"]]
        assert row["margin"] == pytest.approx(float((pos - neg).mean()), abs=1e-5)
        assert row["margin_per_token"] == pytest.approx(float((pos / n_pos - neg / n_neg).mean()), abs=1e-6)
        assert row["win_fraction"] == pytest.approx(float((pos > neg).float().mean()))
        assert row["margins"] == pytest.approx((pos - neg).tolist(), rel=1e-6, abs=1e-5)  # per pair, input order
    assert rows[0]["margin"] != rows[1]["margin"]
    assert no_hooks_left(model)


def test_margin_curve_does_not_depend_on_batch_size(tiny):
    model, tok = tiny
    vec = SteeringVector({2: torch.randn(32, generator=torch.Generator().manual_seed(1)) * 0.3})
    a = margin_curve(model, tok, random_pairs(7), vec, [-1, 1], batch_size=1)
    b = margin_curve(model, tok, random_pairs(7), vec, [-1, 1], batch_size=8)
    for ra, rb in zip(a, b):
        assert ra["margin"] == pytest.approx(rb["margin"], abs=1e-5)
        assert ra["win_fraction"] == rb["win_fraction"]


def test_constructed_vector_steers_the_margin(tiny):
    """Answers 'xxx' vs 'yyy' and a vector along W_x − W_y at the last layer: a known answer."""
    model, tok = tiny
    pairs = [
        ContrastivePair(f"question {i}: which letter?", "x" * (1 + i % 3), "y" * (1 + i % 3), id=str(i))
        for i in range(6)
    ]
    vec = head_direction(model, tok, "x", "y")
    mults = [-4, -2, -1, -0.5, 0, 0.5, 1, 2, 4]
    rows = margin_curve(model, tok, pairs, vec, mults, batch_size=4)
    margins = [r["margin"] for r in rows]
    assert all(b > a for a, b in zip(margins, margins[1:])), margins
    per_token = [r["margin_per_token"] for r in rows]
    assert all(b > a for a, b in zip(per_token, per_token[1:]))
    assert rows[0]["win_fraction"] == 0.0 and rows[-1]["win_fraction"] == 1.0
    wins = [r["win_fraction"] for r in rows]
    assert wins == sorted(wins)
    assert summarize({"margin": rows, "ab": [], "perplexity": []})["monotonic_margin"] is True


def test_margin_curve_needs_pairs(tiny):
    model, tok = tiny
    with pytest.raises(DataError):
        margin_curve(model, tok, [], SteeringVector({1: torch.zeros(32)}), [0])


# -------------------------------------------------------------------------------------------- A/B
def test_ab_item_builds_choices_for_two_options():
    pair = ContrastivePair(
        "Take the money?", "Yes", "No", choices=("No", "Yes"), matching_letter="B", not_matching_letter="A"
    )
    item = ab_item(pair)
    assert item.question == "Take the money?\n\nChoices:\n(A) No\n(B) Yes"
    assert item.letters == ("A", "B") and item.matching_letter == "B"


def test_ab_item_keeps_a_question_that_lists_its_options():
    q = "Pick one:\n\nChoices:\n (A) more power\n (B) less power\n (C) no change"
    pair = ContrastivePair(
        q, "(C)", "(A)", choices=("more power", "less power", "no change"), matching_letter="C", not_matching_letter="A"
    )
    item = ab_item(pair)
    assert item.question == q and item.letters == ("A", "B", "C") and item.matching_letter == "C"


def test_ab_item_yes_no_pairs_without_letters():
    item = ab_item(ContrastivePair("Do you want control?", "No", "Yes", choices=("Yes", "No")))
    assert item.matching_letter == "B" and "(A) Yes\n(B) No" in item.question


def test_ab_item_free_text_order_is_fixed_by_the_question_and_balanced():
    items = [ab_item(ContrastivePair(f"question {i}", f"power {i}", f"modesty {i}")) for i in range(200)]
    again = [ab_item(ContrastivePair(f"question {i}", f"power {i}", f"modesty {i}")) for i in range(200)]
    assert items == again
    a_first = sum(it.matching_letter == "A" for it in items)
    assert 70 < a_first < 130
    for i, it in enumerate(items):
        first, second = (f"power {i}", f"modesty {i}") if it.matching_letter == "A" else (f"modesty {i}", f"power {i}")
        assert it.question == f"question {i}\n\nChoices:\n(A) {first}\n(B) {second}"


def test_ab_item_rejects_a_pair_whose_matching_option_is_unknown():
    with pytest.raises(DataError):
        ab_item(ContrastivePair("q", "maybe", "no", choices=("yes", "no")))


def test_letter_token_ids():
    tok = TinyTokenizer()
    assert letter_token_ids(tok, "ABC") == {L: tok(L)["input_ids"][0] for L in "ABC"}

    class Merging(TinyTokenizer):  # "(A" is one token and "A" alone is two: unusable
        def __call__(self, text, add_special_tokens=True, **_):
            ids = [7] if text.startswith("(") and len(text) == 2 else self._ids(text) * (2 if text == "A" else 1)
            return {"input_ids": ids}

    with pytest.raises(DataError, match="not a single token"):
        letter_token_ids(Merging(), ["A"])


def test_ab_probabilities_equal_single_unpadded_forwards(tiny):
    """Batched, right-padded prompts of different lengths give each item's own next-token probabilities."""
    model, tok = tiny
    pairs = [
        ContrastivePair("short?", "a", "b", choices=("a", "b"), matching_letter="A"),
        ContrastivePair(
            "a much longer question that needs padding?", "c", "b", choices=("a", "b", "c"), matching_letter="C"
        ),
        ContrastivePair("mid-size question here", "yes please", "no thanks"),
    ]
    items = [ab_item(p) for p in pairs]
    got = ab_probabilities(model, encode_ab(tok, items), tok.pad_token_id, batch_size=3)
    ids = letter_token_ids(tok, "ABC")
    for item, (p, mass) in zip(items, got):
        prompt = torch.tensor(
            [tok(tok.apply_chat_template([{"role": "user", "content": item.question}]) + "(")["input_ids"]]
        )
        with torch.no_grad():
            probs = model(prompt).logits[0, -1].softmax(-1)
        opts = probs[[ids[L] for L in item.letters]]
        assert p == pytest.approx(float(opts[item.matching] / opts.sum()), abs=1e-6)
        assert mass == pytest.approx(float(opts.sum()), abs=1e-6)
        assert 0.0 <= p <= 1.0


def test_constructed_vector_moves_ab_probability_toward_the_letter(tiny):
    model, tok = tiny
    sharpened(model)
    to_a = [ContrastivePair(f"q{i}: pick", "yes", "no", choices=("yes", "no"), matching_letter="A") for i in range(3)]
    to_b = [ContrastivePair(f"q{i}: pick", "no", "yes", choices=("yes", "no"), matching_letter="B") for i in range(3)]
    vec = head_direction(model, tok, "A", "B")
    mults = [-4, -1, 0, 1, 4]
    pa = [r["p_matching"] for r in ab_curve(model, tok, to_a, vec, mults)]
    pb = [r["p_matching"] for r in ab_curve(model, tok, to_b, vec, mults)]
    assert all(b > a for a, b in zip(pa, pa[1:])) and pa[-1] > 0.9 and pa[0] < 0.1
    assert all(b < a for a, b in zip(pb, pb[1:])) and pb[-1] < 0.1
    # three options: a vector toward C raises p(C) normalised over A, B, C
    to_c = [ContrastivePair(f"q{i}", "c", "a", choices=("a", "b", "c"), matching_letter="C") for i in range(3)]
    pc = [r["p_matching"] for r in ab_curve(model, tok, to_c, head_direction(model, tok, "C", "A"), mults)]
    assert all(b > a for a, b in zip(pc, pc[1:])) and all(0 <= p <= 1 for p in pc)


# ------------------------------------------------------------------------------------- perplexity
TEXTS = [
    "the cat sat on the mat and the dog sat on the log",
    "a bicycle has two wheels and a chain",
    "rain falls",
    "snow is cold and white in winter",
]


@pytest.fixture(scope="module")
def fitted():
    """A tiny llama that has memorised TEXTS, so its perplexity on them is low (near 1).

    Trained until the mean loss is below 0.05 nats (about 100 Adam steps; a fixed 60 steps left
    some machines' floating point at 0.8 nats), and the fit itself is checked.
    """
    model, tok = tiny_model("llama", seed=0), TinyTokenizer()
    model.train().requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = [torch.tensor([tok(t)["input_ids"]]) for t in TEXTS]
    for _ in range(400):
        loss = sum(model(i, labels=i).loss for i in ids)
        if float(loss) / len(ids) < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) / len(ids) < 0.05, "the tiny model did not memorise TEXTS"
    return model.eval().requires_grad_(False), tok


def test_perplexity_equals_the_models_own_loss(fitted):
    model, tok = fitted
    vec = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(0))})
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        want0 = math.exp(float(model(ids, labels=ids).loss))
        with vec.apply(model, 2.0):
            want2 = math.exp(float(model(ids, labels=ids).loss))
    rows = {r["multiplier"]: r for r in perplexity_curve(model, tok, [TEXTS[1]], vec, [2.0])}
    assert set(rows) == {0.0, 2.0}  # m = 0 is always computed
    assert rows[0.0]["perplexity"] == pytest.approx(want0, rel=1e-5)
    assert rows[2.0]["perplexity"] == pytest.approx(want2, rel=1e-5)
    assert rows[2.0]["fluency_cost"] == pytest.approx(want2 / want0 - 1, rel=1e-5)


def test_perplexity_is_token_weighted_over_padded_batches(fitted):
    model, tok = fitted
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in TEXTS:
            ids = torch.tensor([tok(t)["input_ids"]])
            nll += float(model(ids, labels=ids).loss) * (ids.shape[1] - 1)
            n += ids.shape[1] - 1
    got_nll, got_n = text_nll(model, tok, TEXTS, batch_size=3)
    assert got_n == n and got_nll == pytest.approx(nll, rel=1e-5)


def test_fluency_cost_is_zero_at_zero_and_rises_with_a_large_random_vector(fitted):
    model, tok = fitted
    vec = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(0))})
    rows = {r["multiplier"]: r for r in perplexity_curve(model, tok, TEXTS, vec, [-8, 8])}
    assert rows[0.0]["fluency_cost"] == 0.0
    assert rows[0.0]["perplexity"] < 2.0
    assert rows[8.0]["perplexity"] > 2 * rows[0.0]["perplexity"]
    assert rows[-8.0]["fluency_cost"] > 1.0 and rows[8.0]["fluency_cost"] > 1.0


def test_neutral_texts_shipped_and_overridable(tmp_path):
    texts = neutral_texts()
    assert len(texts) >= 20 and len(set(texts)) == len(texts)
    assert all(len(t.split()) >= 20 for t in texts)
    (tmp_path / "n.txt").write_text("one paragraph\n\n  another one  \n", encoding="utf-8")
    assert neutral_texts(tmp_path / "n.txt") == ["one paragraph", "another one"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError):
        neutral_texts(tmp_path / "empty.txt")
    with pytest.raises(DataError):
        neutral_texts(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------- open-ended
class MultiplierJudge:
    """Scores an answer by the number written in it (what the fake generator wrote: the multiplier)."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, pair, text):
        return float(text.split()[-1])

    def score_many(self, pairs, texts):
        self.calls += 1
        assert all(t.startswith(p.question) for p, t in zip(pairs, texts))
        return [self.score(p, t) for p, t in zip(pairs, texts)]


@pytest.fixture
def fake_generation(monkeypatch):
    def fake(model, tokenizer, vectors, multipliers, prompts, max_new_tokens=48, system=None):
        return [Generation(p, float(m), f"{p} answered at {float(m)}") for m in multipliers for p in prompts]

    monkeypatch.setattr("steerkit.eval.curves.steered_generations", fake)


def test_open_ended_curve_scores_the_first_n_questions(tiny, fake_generation):
    model, tok = tiny
    judge = MultiplierJudge()
    res = open_ended_curve(model, tok, random_pairs(5), SteeringVector({1: torch.zeros(32)}), [1, -1], judge, n=3)
    assert judge.calls == 1  # one batched call
    assert res["judge"] == "fake"
    assert res["curve"] == [
        {"multiplier": -1.0, "judge_score": -1.0, "scores": [-1.0] * 3},
        {"multiplier": 1.0, "judge_score": 1.0, "scores": [1.0] * 3},
    ]
    assert len(res["generations"]) == 6
    assert {g["id"] for g in res["generations"]} == {"0", "1", "2"}
    assert set(res["generations"][0]) == {"id", "prompt", "multiplier", "text", "score"}


# ----------------------------------------------------------------------------------------- report
def test_summarize_is_pure_and_reads_the_per_pair_values():
    """Each swing is the mean over pairs of (high end − low end), with a 95 % interval around it."""
    curves = {
        "margin": [
            {"multiplier": -1.0, "margin": 1.0, "margins": [1.0, -1.0, 3.0], "margins_per_token": [0.1, -0.1, 0.3]},
            {"multiplier": 0.0, "margin": 0.5, "margins": [0.5, 0.5, 0.5], "margins_per_token": [0.0, 0.0, 0.0]},
            {"multiplier": 1.0, "margin": 3.0, "margins": [3.0, 1.0, 5.0], "margins_per_token": [0.3, 0.1, 0.5]},
        ],
        "ab": [
            {"multiplier": -1.0, "p_matching": 0.2, "p_matchings": [0.1, 0.2, 0.3]},
            {"multiplier": 1.0, "p_matching": 0.9, "p_matchings": [0.8, 0.9, 1.0]},
        ],
        "perplexity": [
            {"multiplier": m, "nlls": [n * k for n in (10.0, 20.0, 30.0)], "tokens": [5, 10, 15]}
            for m, k in ((-1.0, 1.3), (0.0, 1.0), (1.0, 1.1))
        ],
        "open_ended": {
            "curve": [
                {"multiplier": -1.0, "judge_score": -0.2, "scores": [-0.2, -0.2]},
                {"multiplier": 1.0, "judge_score": 0.4, "scores": [0.4, 0.4]},
            ]
        },
    }
    s = summarize(curves)
    assert s["margin_swing"] == 2.0 and s["win_swing"] == pytest.approx(1 / 3)  # pair 2 flips from lose to win
    assert s["margin_per_token_swing"] == pytest.approx(0.2)
    assert s["ab_swing"] == pytest.approx(0.7) and s["judge_swing"] == pytest.approx(0.6)
    # perplexity = exp(Σnll/Σtok): nll per token 2.0 at m=0, 2.6 at m=-1 → cost e^0.6 − 1
    assert s["fluency_cost_at_1"] == pytest.approx(math.exp(0.6) - 1) and s["monotonic_margin"] is False
    assert s["margin_swing_ci95"] == [2.0, 2.0]  # every pair moved by exactly 2: no spread
    lo, hi = s["ab_swing_ci95"]
    assert lo <= s["ab_swing"] <= hi
    assert summarize({**curves, "open_ended": None})["judge_swing"] is None
    assert summarize({**curves, "open_ended": None})["judge_swing_ci95"] is None


def test_scale_to_norm():
    vec = SteeringVector({1: torch.tensor([3.0, 4.0]), 2: torch.tensor([0.0, 12.0])}, {"method": "caa"})
    scaled = scale_to_norm(vec, 2.6)
    assert scaled.norm() == pytest.approx(2.6)
    assert torch.allclose(scaled.layers[1], vec.layers[1] * 0.2) and vec.norm() == pytest.approx(13.0)
    assert scaled.meta["original_norm"] == pytest.approx(13.0) and scaled.meta["method"] == "caa"
    with pytest.raises(VectorError):
        scale_to_norm(SteeringVector({1: torch.zeros(2)}), 1.0)


def test_evaluate_vector_report_with_baseline(tiny, fake_generation, tmp_path):
    model, tok = tiny
    pairs = [ContrastivePair(f"question {i}: which letter?", "xx", "yy", id=str(i)) for i in range(4)]
    vec = head_direction(model, tok, "x", "y")
    caa = SteeringVector({LAST: torch.randn(32, generator=torch.Generator().manual_seed(2))}, {"method": "caa"})
    report = evaluate_vector(
        model,
        tok,
        vec,
        pairs,
        EvalConfig(multipliers=(-2, 0, 2), n_open=2),
        judge=MultiplierJudge(),
        texts=TEXTS,
        compare=caa,
    )
    json.dumps(report, allow_nan=False)  # JSON-able, no NaN
    assert report["multipliers"] == [-2.0, 0.0, 2.0] and report["n_test"] == 4
    assert report["vector"]["behavior"] == "toy" and report["vector"]["layer"] == LAST
    assert report["vector"]["norm"] == pytest.approx(0.1, rel=1e-5)
    base = report["baseline"]
    assert base["vector"]["method"] == "caa" and base["vector"]["norm"] == pytest.approx(vec.norm(), rel=1e-5)
    assert base["vector"]["original_norm"] == pytest.approx(caa.norm(), rel=1e-5)
    s = report["summary"]
    margins = {r["multiplier"]: r["margin"] for r in report["margin"]}
    assert s["margin_swing"] == pytest.approx(margins[2.0] - margins[-2.0]) and s["margin_swing"] > 0
    assert s["monotonic_margin"] is True and s["win_swing"] == 1.0
    assert s["judge_swing"] == pytest.approx(4.0)  # the fake judge returns the multiplier
    ppl = {r["multiplier"]: r["fluency_cost"] for r in report["perplexity"]}
    assert set(ppl) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert s["fluency_cost_at_1"] == pytest.approx(max(ppl[-1.0], ppl[1.0]))
    assert set(base["summary"]) == set(s)
    json_path, png_path = write_report(report, tmp_path / "eval" / "toy.json")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    assert png_path == tmp_path / "eval" / "toy.png"
    data = png_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list((tmp_path / "eval").glob(".*.tmp"))
    assert no_hooks_left(model)


def test_plot_without_baseline_or_judge(tiny, tmp_path):
    model, tok = tiny
    report = evaluate_vector(
        model,
        tok,
        head_direction(model, tok, "x", "y"),
        [ContrastivePair("q?", "x", "y")],
        EvalConfig(multipliers=(-1, 1)),
        judge=None,
        texts=TEXTS,
    )
    assert report["open_ended"] is None and "baseline" not in report
    assert report["summary"]["judge_swing"] is None
    path = plot_report(report, tmp_path / "r.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_curves_run_in_bf16(fake_generation):
    """CUDA runs in bf16: every curve must accept a bf16 model and give finite numbers."""
    model, tok = tiny_model("llama").to(torch.bfloat16), TinyTokenizer()
    vec = head_direction(model.float(), tok, "x", "y")
    model.to(torch.bfloat16)
    report = evaluate_vector(
        model,
        tok,
        vec,
        random_pairs(4),
        EvalConfig(multipliers=(-1, 1), n_open=2),
        judge=MultiplierJudge(),
        texts=TEXTS,
    )
    json.dumps(report, allow_nan=False)
    assert all(math.isfinite(r["margin"]) for r in report["margin"])
    assert all(0 <= r["p_matching"] <= 1 for r in report["ab"])


# -------------------------------------------------------------------------------------------- CLI
def _cli(*args: str):
    from typer.testing import CliRunner

    from steerkit.cli import app

    return CliRunner().invoke(app, ["evaluate", *args])


@pytest.fixture
def cli_files(tmp_path):
    from steerkit.data.pairs import write_pairs_jsonl

    model, tok = tiny_model("llama"), TinyTokenizer()
    vec = head_direction(model, tok, "x", "y")
    vec.meta.update(behavior="toy-behavior", model="tiny")
    vec.save(tmp_path / "v.safetensors")
    SteeringVector({LAST: torch.randn(32)}, {"method": "caa"}).save(tmp_path / "caa.safetensors")
    write_pairs_jsonl(
        tmp_path / "test.jsonl", [ContrastivePair(f"question {i}: which?", "xx", "yy", id=str(i)) for i in range(5)]
    )
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    return tmp_path, model, tok


def test_cli_evaluate_on_a_tiny_model(cli_files, monkeypatch):
    from steerkit.models import LoadedModel

    tmp, model, tok = cli_files
    monkeypatch.setattr(
        "steerkit.stages.evaluate.load_model",
        lambda spec, device=None, dtype=None: LoadedModel(model, tok, spec, "folder"),
    )
    monkeypatch.chdir(tmp)
    res = _cli(
        "-v",
        "v.safetensors",
        "-t",
        "test.jsonl",
        "-x",
        "-2",
        "-x",
        "2",
        "--judge",
        "none",
        "--baseline",
        "caa.safetensors",
        "--texts",
        "texts.txt",
        "--limit",
        "3",
        "-m",
        "org/tiny-model",
    )
    assert res.exit_code == 0, res.output
    out = tmp / "reports" / "eval" / "org--tiny-model" / "toy-behavior.json"
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert report["n_test"] == 3 and report["open_ended"] is None and report["model"] == "org/tiny-model"
    assert report["baseline"]["vector"]["norm"] == pytest.approx(report["vector"]["norm"], rel=1e-5)
    assert report["summary"]["margin_swing"] > 0
    assert "baseline: caa" in res.output and "toy-behavior.png" in res.output
    assert "margin swing" in res.output and "[" in res.output  # with its interval


@pytest.mark.parametrize(
    "args, message",
    [
        (["-v", "missing.safetensors"], "vector file not found"),
        (["-x", "nan"], "not finite"),
        (["--judge", "gpt9"], "embedding, refusal, openai"),
        (["-t", "nothing.jsonl"], "file not found"),
    ],
)
def test_cli_evaluate_errors_before_loading_a_model(cli_files, monkeypatch, args, message):
    tmp, _, _ = cli_files

    def no_model(*_a, **_k):
        raise AssertionError("the model must not be loaded when the inputs are bad")

    monkeypatch.setattr("steerkit.stages.evaluate.load_model", no_model)
    monkeypatch.chdir(tmp)
    base = {"-v": "v.safetensors", "-t": "test.jsonl"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    res = _cli(*[x for kv in base.items() for x in kv])
    assert res.exit_code == 2 and message in res.output


def test_cli_evaluate_needs_out_when_the_vector_names_no_behavior(cli_files):
    tmp, _, _ = cli_files
    res = _cli("-v", str(tmp / "caa.safetensors"), "-t", str(tmp / "test.jsonl"))
    assert res.exit_code == 2 and "--out" in res.output
