"""Calibration (layer choice, safe multiplier range) and the paper's behavior-specific measures."""

from __future__ import annotations

import torch

from steerkit.eval import calibrate as cal
from steerkit.eval.paper import mc1_accuracy_curve
from steerkit.packing import encode_pairs
from steerkit.vector import SteeringVector

from ...conftest import TinyTokenizer, random_pairs, tiny_model

TEXTS = ["abc def gh", "the cat sat on a mat", "hello there friend", "zz yy xx ww vv"]


def test_safe_multiplier_known_answers():
    model, tok = tiny_model("llama"), TinyTokenizer()
    zero = SteeringVector({1: torch.zeros(32)})
    assert cal.safe_multiplier(model, tok, zero, TEXTS) == max(cal.LADDER)  # no cost at any m
    model.lm_head.weight.data *= 50  # a random init's logits are too flat for any vector to hurt fluency
    # at the last layer, along the LM-head row of a token absent from the texts: every prediction goes there
    absent = next(i for i in range(2, 96) if i not in {t for x in TEXTS for t in tok(x)["input_ids"]})
    huge = SteeringVector({3: 50.0 * model.lm_head.weight[absent].detach()})
    assert cal.safe_multiplier(model, tok, huge, TEXTS) == 0.0  # even m = 0.5 wrecks fluency


def test_calibrate_picks_the_best_eligible_candidate_and_records_it():
    model, tok = tiny_model("llama"), TinyTokenizer()
    pairs = random_pairs(16)
    base = cal.bipo.BipoConfig(batch_size=4, warmup_steps=1)
    res = cal.calibrate(
        model,
        tok,
        pairs[:12],
        pairs[12:],
        layers=(0, 2),
        lrs=(1e-2, 3e-2),  # a layer's candidates train together (bipo.train_many)
        epochs=(1,),
        base=base,
        texts=TEXTS,
        model_name="tiny",
    )
    grid = [(0, 1e-2, 1), (0, 3e-2, 1), (2, 1e-2, 1), (2, 3e-2, 1)]
    assert [(c.layer, c.lr, c.epochs) for c in res.candidates] == grid
    eligible = [c for c in res.candidates if c.eligible] or res.candidates
    assert res.best.val_margin_swing_at_1 == max(c.val_margin_swing_at_1 for c in eligible)
    assert res.vector.layer_ids == [res.best.layer]
    assert res.vector.meta["safe_multipliers"] == [-res.safe_multiplier, res.safe_multiplier]
    assert res.vector.meta["calibration"]["chosen"]["layer"] == res.best.layer
    assert len(res.vector.meta["calibration"]["candidates"]) == 4
    best = cal.bipo.train(
        model,
        encode_pairs(tok, pairs[:12]),
        cal.dataclasses.replace(base, layer=res.best.layer, lr=res.best.lr, epochs=1),
        tok.pad_token_id,
        progress=False,
    )
    assert torch.allclose(best.vector.layers[res.best.layer], res.vector.layers[res.best.layer], atol=1e-5)


def test_mc1_accuracy_matches_an_independent_argmax():
    model, tok = tiny_model("llama"), TinyTokenizer()
    items = [
        {"question": "q one", "choices": ["aa", "bbbb", "c"], "correct": 0},
        {"question": "second q", "choices": ["dd", "e"], "correct": 1},
        {"question": "third", "choices": ["ff", "gg", "hh", "ii"], "correct": 2},
    ]
    zero = SteeringVector({1: torch.zeros(32)})
    got = mc1_accuracy_curve(model, tok, items, zero, [0.0], batch_size=2)[0]["mc1_accuracy"]
    correct = 0
    with torch.no_grad():
        for it in items:
            prompt = tok(tok.apply_chat_template([{"role": "user", "content": it["question"]}]))["input_ids"]
            scores = []
            for ch in it["choices"]:
                ans = tok(" " + ch)["input_ids"]
                logits = model(input_ids=torch.tensor([prompt + ans])).logits[0].log_softmax(-1)
                scores.append(sum(float(logits[len(prompt) - 1 + k, t]) for k, t in enumerate(ans)))
            correct += int(max(range(len(scores)), key=scores.__getitem__) == it["correct"])
    assert got == correct / len(items)
