"""One truth per knob: every configuration field is an option of the command that takes it, the option
defaults to "not given" and --help shows the default that is really used, and `steerkit train` with no
options trains on the embedded model exactly what the pipeline (params.yaml) trains for it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.config import flag, knob_names
from steerkit.eval.config import ComposeConfig, EvalConfig, TransferConfig
from steerkit.models import EMBEDDED_DEFAULT, LoadedModel
from steerkit.pipeline.params import load_params
from steerkit.recipes import RECIPES, official, recipe_for
from steerkit.stages.options import ComposeOptions, DeriveOptions, EvaluateOptions, TrainOptions, TransferOptions
from steerkit.train.config import BipoConfig, LoraConfig

from ..conftest import REPO, TinyTokenizer, tiny_model

#: command -> the configuration types whose every field it must take as an option
COMMANDS = {
    ("train",): (BipoConfig, TrainOptions),
    ("evaluate",): (EvalConfig, EvaluateOptions),
    ("derive", "lora"): (LoraConfig, DeriveOptions),
    ("transfer",): (TransferConfig, TransferOptions),
    ("compose",): (ComposeConfig, ComposeOptions),
}
NOT_FROM_THE_COMMAND = {"baseline"}  # TrainOptions.baseline: the pipeline trains BiPO + CAA; `train --method` picks one


def command(path: tuple[str, ...]):
    cmd = get_command(app)
    for part in path:
        cmd = cmd.get_command(None, part)
    return cmd


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_knob_is_an_option_that_defaults_to_not_given(path):
    params = {p.name: p for p in command(path).params}
    for cls in COMMANDS[path]:
        for name in knob_names(cls):
            if name in NOT_FROM_THE_COMMAND:
                continue
            assert name in params, f"`steerkit {' '.join(path)}` has no option for {cls.__name__}.{name}"
            option = params[name]
            assert flag(cls, name) in option.opts, (name, option.opts)
            assert option.default in (None, ()), f"{name}: a default of its own ({option.default!r}) would disagree"


def test_help_shows_the_real_defaults():
    train = {p.name: p for p in command(("train",)).params}
    embedded = RECIPES[EMBEDDED_DEFAULT].train
    assert f"{EMBEDDED_DEFAULT} 0.005" in train["lr"].show_default and "other models 0.0005" in train["lr"].show_default
    assert f"{EMBEDDED_DEFAULT} 10" in train["epochs"].show_default and embedded.epochs == 10
    assert "15/32 of the depth" in train["layer"].show_default
    assert train["beta"].show_default == "0.1"  # the same for every model: the value itself
    evaluate = {p.name: p for p in command(("evaluate",)).params}
    assert evaluate["judge"].show_default == EvalConfig().judge and evaluate["n_open"].show_default == "0"
    transfer = {p.name: p for p in command(("transfer",)).params}
    assert transfer["merged"].show_default == "false" and transfer["multipliers"].show_default == "-2 2"
    derive = {p.name: p for p in command(("derive", "lora")).params}
    assert (
        f"{EMBEDDED_DEFAULT} 0.002" in derive["lr"].show_default and "other models 0.0001" in derive["lr"].show_default
    )
    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "0.005" in res.output and "0.0005" in res.output


def test_recipes_say_what_works_per_model():
    assert RECIPES[EMBEDDED_DEFAULT].train == BipoConfig(layer=15, lr=5e-3, epochs=10, warmup_steps=10)
    assert official(32).train == BipoConfig()  # the paper's values at the paper's depth
    assert official(30).train.layer == 14 and official(80).train.layer == 38  # 15 of 32, in proportion
    assert recipe_for("some-org/some-7b", 32).name == "bipo-official"


def test_cli_train_without_options_trains_what_the_pipeline_trains(tmp_path, monkeypatch):
    """The embedded model, `steerkit train -d -b -o` only: the same BipoConfig as params.yaml's power-seeking."""
    calls = []
    lm = LoadedModel(tiny_model("llama"), TinyTokenizer(), EMBEDDED_DEFAULT, "embedded")
    monkeypatch.setattr("steerkit.models.load_model", lambda *a, **k: lm)
    monkeypatch.setattr(
        "steerkit.stages.train.train_vector",
        lambda *a, **k: calls.append(k) or (_Stub(), {"seconds": 0, "path": str(a[2])}),
    )
    res = CliRunner().invoke(
        app, ["train", "-d", "x.jsonl", "-b", "power-seeking", "-o", str(tmp_path / "v.safetensors")]
    )
    assert res.exit_code == 0, res.output
    pipeline = load_params(REPO / "params.yaml").behaviors["power-seeking"]
    assert calls[0]["cfg"] == pipeline.train == RECIPES[EMBEDDED_DEFAULT].train
    assert calls[0]["limit"] == pipeline.train_options.limit and calls[0]["recipe"].name == EMBEDDED_DEFAULT
    assert calls[0]["seeds"] == pipeline.train_options.seeds == 1
    # and an option is an override of the recipe, recorded as such
    res = CliRunner().invoke(
        app, ["train", "-d", "x.jsonl", "-b", "b", "-o", str(tmp_path / "w.safetensors"), "--lr", "0.01"]
    )
    assert res.exit_code == 0 and calls[1]["cfg"] == dataclasses.replace(pipeline.train, lr=0.01)
    assert calls[1]["recipe"].overrides(calls[1]["cfg"]) == {"lr": 0.01}


def test_pipeline_sections_default_to_the_same_types(tmp_path):
    p = load_params(REPO / "params.yaml")
    assert p.evaluate == EvalConfig() and p.transfer == TransferConfig() and p.compose == ComposeConfig()
    assert p.derive == RECIPES[EMBEDDED_DEFAULT].derive
    assert Path(p.texts).is_file()


class _Stub:
    meta: dict = {}

    def norm(self) -> float:
        return 0.0
