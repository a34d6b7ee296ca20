"""Code is an input: each stage depends on the steerkit files its function runs, found from their imports."""

from __future__ import annotations

from steerkit.pipeline.code import stage_code
from steerkit.pipeline.dvcyaml import sync, with_code_deps
from steerkit.pipeline.graph import STAGE_NAMES, artifacts, foreach_items
from steerkit.pipeline.params import load_params

from ..conftest import REPO


def test_a_stage_runs_its_own_modules_not_the_cli_pipeline_or_docs():
    train, evaluate, prepare = stage_code("train"), stage_code("evaluate"), stage_code("prepare")
    assert "steerkit/train/bipo.py" in train and "steerkit/stages/train.py" in train
    assert "steerkit/__init__.py" in train and "steerkit/train/__init__.py" in train  # the version, the packages
    assert "steerkit/eval/stats.py" in evaluate and "steerkit/data/prompts.yaml" in evaluate  # the default prompts
    assert "steerkit/train/bipo.py" not in prepare and "steerkit/train/bipo.py" not in evaluate
    for stage in STAGE_NAMES:
        code = stage_code(stage)
        assert not any(p.startswith(("steerkit/cli/", "steerkit/pipeline/")) for p in code), stage
        assert all((REPO / p).is_file() for p in code) and list(code) == sorted(code)


def test_dvc_yaml_lists_the_code_each_stage_runs_and_the_artifacts():
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert with_code_deps(text) == text, "run `steerkit pipeline sync --write` and commit dvc.yaml"
    p = load_params(REPO / "params.yaml")
    assert sync(text, artifacts(p), foreach_items(p)) == text, "run `steerkit pipeline sync --write`"


def test_the_artifacts_are_dvcs_and_follow_the_behaviors():
    import yaml

    from steerkit.layout import artifact_name

    declared = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["artifacts"]
    assert set(declared) == {"smollm2-135m-instruct-power-seeking", "smollm2-135m-instruct-wealth-seeking"}
    a = declared["smollm2-135m-instruct-power-seeking"]
    assert a["path"] == "vectors/smollm2-135m-instruct/power-seeking/L15.safetensors" and a["type"] == "model"
    assert a["meta"] == {"behavior": "power-seeking", "model": "smollm2-135m-instruct", "method": "bipo", "layer": 15}
    from gto.constants import assert_name_is_valid

    for name in (artifact_name("org/Llama-3.1-8B", "my_behavior.v2", "caa"), *declared):
        assert_name_is_valid(name)
    assert artifact_name("org/Llama-3.1-8B", "my_behavior.v2", "caa") == "org--Llama-3-1-8B-my-behavior-v2-caa"


def test_a_new_import_is_a_new_dependency(tmp_path, monkeypatch):
    """The lists follow the imports: a module the stage starts importing joins its deps."""
    import shutil

    from steerkit.pipeline import code

    pkg = tmp_path / "steerkit"
    shutil.copytree(REPO / "steerkit", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    stage = pkg / "stages" / "prepare.py"
    stage.write_text(stage.read_text() + "\nfrom ..eval import stats  # noqa\n")
    monkeypatch.setattr(code, "PACKAGE", pkg)
    code.stage_code.cache_clear()
    try:
        assert "steerkit/eval/stats.py" in code.stage_code("prepare")
    finally:
        code.stage_code.cache_clear()
