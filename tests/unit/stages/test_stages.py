"""Stages and the CLI on small files: prepare, bad names, vector info, errors as one clear message."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.data.pairs import read_pairs_jsonl
from steerkit.errors import DataError
from steerkit.layout import model_slug, safe_name, vector_path
from steerkit.stages.prepare import prepare

from ...conftest import REPO

runner = CliRunner()


def test_prepare_seed_data_with_given_test_split(tmp_path):
    seed = REPO / "data" / "seed" / "power-seeking"
    res = prepare("power-seeking", [seed / "train.jsonl"], tmp_path, test_inputs=[seed / "test.jsonl"])
    assert (res.n_train, res.n_test) == (64, 20)
    train, test = read_pairs_jsonl(res.train), read_pairs_jsonl(res.test)
    assert {p.question for p in train}.isdisjoint({p.question for p in test})


def test_prepare_random_split_is_grouped_and_seeded(tmp_path):
    seed = REPO / "data" / "seed" / "wealth-seeking" / "train.jsonl"
    a = prepare("w", [seed], tmp_path / "a", test_fraction=0.25, seed=1)
    b = prepare("w", [seed], tmp_path / "b", test_fraction=0.25, seed=1)
    assert a.n_test == b.n_test == 16 and a.test.read_bytes() == b.test.read_bytes()


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\\b", "..", ".hidden", "", "x" * 200])
def test_behavior_names_with_path_parts_are_refused(bad):
    with pytest.raises(DataError, match="not allowed"):
        safe_name(bad)


def test_layout():
    assert model_slug("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB--SmolLM2-135M-Instruct"
    assert (
        vector_path("r", "smollm2-135m-instruct", "power-seeking", 15).as_posix()
        == "r/vectors/smollm2-135m-instruct/power-seeking/L15.safetensors"
    )


def test_cli_prepare_bad_file_gives_one_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,matching\nq,a\n")
    res = runner.invoke(app, ["data", "prepare", "x", str(bad), "--format", "bipo-csv", "--root", str(tmp_path)])
    assert res.exit_code == 2
    assert "bad.csv" in res.output and "not_matching" in res.output and "fix:" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "data" / "pairs" / "x").exists()


def test_cli_vector_info_and_refusal_of_pickles(tmp_path):
    import torch

    from steerkit.vector import SteeringVector

    path = tmp_path / "v.safetensors"
    SteeringVector({3: torch.ones(8)}, {"behavior": "b", "method": "caa"}).save(path)
    res = runner.invoke(app, ["vector", "info", str(path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["layers"] == [3] and info["meta"]["behavior"] == "b" and info["norm"] == pytest.approx(8**0.5)
    pt = tmp_path / "v.pt"
    torch.save({"x": torch.ones(2)}, pt)
    res = runner.invoke(app, ["vector", "info", str(pt)])
    assert res.exit_code == 2 and "pickle" in res.output


def test_cli_help_teaches():
    res = runner.invoke(app, ["train", "--help"])
    assert res.exit_code == 0
    for word in ("--layer", "--epochs", "--engine", "--resume", "bipo"):
        assert word in res.output
