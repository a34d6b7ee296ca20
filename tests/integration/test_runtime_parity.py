"""Runtime parity: a vector trained on the embedded model, exported for llama.cpp, steers the same in llama.cpp.

The embedded model's own GGUF (Q4_1) runs in llama.cpp (llama-cpp-python); the exported control vector
is fetched the way the README shows (`steerkit catalog get … --for llama.cpp`) and applied with the flags it
prints, placed the way llama.cpp's loader places it (``direction.N`` → block N); the held-out margins at
m = −2, 0, 2 must agree with steerkit's (fp32, dequantised) — and an export that is negated or one
layer off must not. The vector is CAA scaled to norm 10 (BiPO's vectors here are of that order): measured
on 12 held-out pairs, a right export's steering effect differs from steerkit's by at most 0.37 nats on a
swing of 10.1 (the tolerance is 5 % of the swing, 0.50), one a layer up or down by 1.05 / 1.19 at m = +2,
a negated one by 9.7. About 80 s of llama.cpp scoring.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.data.readers import load_pairs
from steerkit.eval import runtime as rt
from steerkit.eval.curves import margin_curve
from steerkit.eval.report import scale_to_norm
from steerkit.models import embedded_gguf
from steerkit.packing import encode_pairs
from steerkit.train.caa import train_caa
from steerkit.vector import SteeringVector

from ..conftest import REPO

pytestmark = pytest.mark.integration
SEED = REPO / "data" / "seed" / "power-seeking"
M = [-2.0, 0.0, 2.0]


def export(vec: SteeringVector, path) -> str:
    """Through the command line, as a user exports it."""
    vec.save(path.with_suffix(".safetensors"))
    res = CliRunner().invoke(app, ["export", str(path.with_suffix(".safetensors")), "--out", str(path)])
    assert res.exit_code == 0, res.output
    return str(path)


def from_catalog(vec: SteeringVector, root) -> tuple[str, float, tuple[int, int]]:
    """The README's recipe: catalogue the vector, `steerkit catalog get … --for llama.cpp`, read the flags it prints."""
    vec.meta["behavior"] = "power-seeking"
    vec.save(root / "vectors" / vec.meta["model"] / "power-seeking" / "L15.safetensors")
    res = CliRunner().invoke(app, ["catalog", "build", "--root", str(root)])
    assert res.exit_code == 0, res.output
    out = root / "power-seeking.gguf"
    get = [
        "catalog",
        "get",
        "power-seeking",
        "--method",
        "caa",
        "--channel",
        "candidate",
        "--for",
        "llama.cpp",
        "-o",
        str(out),
    ]
    res = CliRunner().invoke(app, [*get, "--root", str(root)])
    assert res.exit_code == 0, res.output
    flags = re.search(r"--control-vector-scaled (\S+) (\S+) --control-vector-layer-range (\d+) (\d+)", res.output)
    assert flags and "llama-server" in res.output and flags[1] == str(out), res.output
    return flags[1], float(flags[2]), (int(flags[3]), int(flags[4]))


def test_llamacpp_steers_like_steerkit_and_a_wrong_export_does_not(embedded, tmp_path):
    lm = embedded
    train = encode_pairs(lm.tokenizer, load_pairs(SEED / "train.jsonl", 32))
    vec = scale_to_norm(train_caa(lm.model, train, 15, lm.tokenizer.pad_token_id, model_name=lm.name), 10.0)
    pairs = load_pairs(SEED / "test.jsonl", 8)
    ours = margin_curve(lm.model, lm.tokenizer, pairs, vec, M)
    enc = encode_pairs(lm.tokenizer, pairs)
    path, scale, layers = from_catalog(vec, tmp_path)
    assert layers == (15, 15) and scale == 1.0  # the vector's own layer; no safe range recorded yet: scale 1
    runtime = rt.LlamaCpp(embedded_gguf(lm.name), n_threads=2)
    try:
        theirs = rt.margin_curve(runtime, enc, path, [m * scale for m in M], layers)
        right = rt.parity(ours, theirs)
        assert right["ok"], right
        assert theirs[-1]["margin"] > theirs[1]["margin"] > theirs[0]["margin"]  # it steers inside llama.cpp
        unsteered = theirs[1]
        wrong = {
            "negated": -vec,
            "one layer up": SteeringVector({16: vec.layers[15]}, vec.meta),
            "one layer down": SteeringVector({14: vec.layers[15]}, vec.meta),
        }
        for name, bad in wrong.items():
            curve = rt.margin_curve(runtime, enc, export(bad, tmp_path / f"{name.replace(' ', '-')}.gguf"), [2.0])
            check = rt.parity(ours, [unsteered, *curve])
            assert not check["ok"], (name, check)
    finally:
        runtime.close()
