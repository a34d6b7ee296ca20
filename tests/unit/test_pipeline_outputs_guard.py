"""Nothing outside the pipeline writes the pipeline's outputs: a command run by hand inside a project, without an
explicit output path, refuses to write over what a DVC stage made, naming the stage; an explicit path is the
user's call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.pipeline.graph import owner_of
from steerkit.vector import SteeringVector

from ..conftest import REPO

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def project(tmp_path, monkeypatch):
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "data" / "seed", tmp_path / "data" / "seed")
    monkeypatch.chdir(tmp_path)
    vec = SteeringVector({15: torch.ones(576)}, {"behavior": "power-seeking", "model": MODEL, "method": "bipo"})
    vec.save(tmp_path / "scratch" / "L15.safetensors")
    return tmp_path


def test_owner_of_names_the_dvc_stage(project):
    assert owner_of(f"reports/eval/{MODEL}/power-seeking.json", project) == "evaluate@power-seeking"
    assert owner_of(f"reports/eval/{MODEL}/power-seeking.png", project) == "evaluate@power-seeking"
    assert owner_of("data/pairs/wealth-seeking/test.jsonl", project) == "prepare@wealth-seeking"
    assert owner_of(f"vectors/{MODEL}/power-seeking/L15.safetensors", project) == "train@power-seeking"
    assert owner_of("data/pairs/bipo-power-seeking/train.jsonl", project) is None  # optional: the flow's, not DVC's
    assert owner_of("scratch/report.json", project) is None
    assert owner_of(f"reports/eval/{MODEL}/power-seeking.json", project / "scratch") is None  # no pipeline there


@pytest.mark.parametrize(
    ("args", "stage"),
    [
        (["evaluate", "-v", "scratch/L15.safetensors", "-t", "data/seed/power-seeking/test.jsonl"], "evaluate"),
        (
            ["gate", "-v", "scratch/L15.safetensors", "-t", "data/seed/power-seeking/test.jsonl", "-e", "x.json"],
            "gate",
        ),
        (["data", "prepare", "power-seeking", "data/seed/power-seeking/train.jsonl"], "prepare"),
    ],
)
def test_a_defaulted_output_the_pipeline_owns_is_refused(project, args, stage):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert f"the pipeline's {stage}@power-seeking stage" in res.output and "fix:" in res.output
    assert not (project / "reports").exists() and not (project / "data" / "pairs").exists()


def test_an_explicit_output_or_another_behavior_is_the_users_call(project):
    res = CliRunner().invoke(app, ["data", "prepare", "my-behavior", "data/seed/power-seeking/train.jsonl"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app, ["data", "prepare", "power-seeking", "data/seed/power-seeking/train.jsonl", "--root", "."]
    )
    assert res.exit_code == 0, res.output  # the pipeline's own command line: --root given
    assert Path("data/pairs/power-seeking/train.jsonl").is_file()
