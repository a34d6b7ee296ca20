"""params.yaml: the shipped file is valid; mistakes name the file, the key and the fix (dvc.yaml: test_graph.py)."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.pipeline import graph
from steerkit.pipeline.params import ParamsError, load_params, parse_params

from ..conftest import REPO

SHIPPED = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def parse(raw: dict):
    return parse_params(raw, "params.yaml", REPO)


def with_change(path: str, value) -> dict:
    raw = copy.deepcopy(SHIPPED)
    *parents, last = path.split(".")
    node = raw
    for k in parents:
        node = node[k]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


_DELETE = object()


def test_shipped_params_are_valid_and_defaults_merge():
    p = load_params(REPO / "params.yaml")
    assert list(p.behaviors) == ["power-seeking", "wealth-seeking"]
    ps = p.behaviors["power-seeking"]
    assert (ps.train.layer, ps.train.epochs, ps.train.lr, ps.train.warmup_steps) == (15, 10, 0.005, 10)
    assert ps.evaluate.multipliers == (-2.0, -1.0, 0.0, 1.0, 2.0) and ps.evaluate.judge == "none"
    assert ps.data.train == "data/seed/power-seeking/train.jsonl"
    assert set(p.optional["bipo"]) == {"bipo-power-seeking", "bipo-wealth-seeking"}
    assert p.optional["bipo"]["bipo-power-seeking"].train_options.limit == 48


def test_per_behavior_override_changes_only_that_behavior():
    raw = with_change("behaviors.wealth-seeking.train", {"layer": 12, "lr": 0.01})
    p = parse(raw)
    assert (p.behaviors["wealth-seeking"].train.layer, p.behaviors["wealth-seeking"].train.lr) == (12, 0.01)
    assert p.behaviors["power-seeking"].train.layer == 15
    train_ws = graph.node(p, "train", "wealth-seeking").argv[0]
    assert "--layer" in train_ws and train_ws[train_ws.index("--layer") + 1] == "12"
    assert (
        "vectors/smollm2-135m-instruct/wealth-seeking/L12.safetensors"
        in graph.node(p, "evaluate", "wealth-seeking").argv[0]
    )


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("train.lerning_rate", 0.1, "unknown key 'lerning_rate'"),
        ("train.epochs", "three", "must be an integer"),
        ("train.lr", -1.0, "must be > 0"),
        ("evaluate.multipliers", [1, "x"], "list of numbers"),
        ("evaluate.judge", "gpt", "must be one of"),
        ("behaviors.power-seeking.train", _DELETE, "write `train: {}`"),
        ("behaviors.power-seeking.evaluate", {"texts": "x.txt"}, "unknown key 'texts'"),
        ("behaviors.power-seeking.data", {"train": "/etc/passwd", "test": "t.jsonl"}, "inside the project"),
        ("model.dir", "other", "must be 'smollm2-135m-instruct'"),
        ("combos.power-wealth.vectors", ["power-seeking", "honesty"], "'honesty' is not a behavior"),
        ("colour", "blue", "unknown key 'colour'"),
    ],
)
def test_mistakes_name_the_key(path, value, message):
    with pytest.raises(ParamsError) as info:
        parse(with_change(path, value))
    text = str(info.value)
    assert text.startswith("params.yaml: ") and message in text
    key = path.rsplit(".", 1)[0] if message.startswith("unknown key") else path
    assert key.split(".")[0] in text


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  layer: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML at line"):
        load_params(bad)
    with pytest.raises(ParamsError, match="no parameters file"):
        load_params(tmp_path / "nope.yaml")


def test_cli_check_reports_one_clear_error(tmp_path):
    raw = with_change("train.epochs", 0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["pipeline", "check", "--params", str(tmp_path / "params.yaml")])
    assert res.exit_code == 2 and "train.epochs" in res.output and "must be >= 1" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["pipeline", "stage", "bake", "x"], "unknown stage 'bake'"),
        (["pipeline", "stage", "train"], "runs once per behavior: name one"),
        (["pipeline", "stage", "train", "honesty"], "no behavior 'honesty'"),
        (["pipeline", "stage", "compose", "nope"], "no combination 'nope'"),
    ],
)
def test_cli_stage_refuses_what_params_yaml_does_not_define(args, message, monkeypatch):
    monkeypatch.chdir(REPO)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_dvc_resolves_the_shipped_pipeline():
    """DVC itself expands dvc.yaml with the shipped params.yaml: one chain per behavior, deps are files."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = {s.addressing: s for s in repo.index.stages if s.path_in_repo == "dvc.yaml"}
    behaviors = ("power-seeking", "wealth-seeking")
    expected = {f"{st}@{b}" for st in ("prepare", "train", "evaluate", "gate", "transfer") for b in behaviors}
    assert set(stages) == expected | {"derive", "compose@power-wealth", "catalog"}
    train = stages["train@wealth-seeking"]
    assert train.cmd == "steerkit pipeline stage train wealth-seeking"
    data_deps = [d.def_path for d in train.deps if not hasattr(d, "params") and not d.def_path.startswith("steerkit/")]
    assert data_deps == ["data/pairs/wealth-seeking/train.jsonl", "data/pairs/wealth-seeking/source.json"]
    assert "steerkit/train/bipo.py" in {d.def_path for d in train.deps}  # and the code it runs
    assert [o.def_path for o in train.outs] == ["vectors/smollm2-135m-instruct/wealth-seeking"]
    ev = stages["evaluate@power-seeking"]
    assert {o.def_path: (o.metric, bool(o.plot)) for o in ev.outs} == {
        "reports/eval/smollm2-135m-instruct/power-seeking.json": (True, False),
        "reports/eval/smollm2-135m-instruct/power-seeking.png": (False, True),
    }
    prep = stages["prepare@power-seeking"]
    assert [d.def_path for d in prep.deps if not hasattr(d, "params") and "steerkit/" not in d.def_path] == [
        "data/seed/power-seeking/train.jsonl",
        "data/seed/power-seeking/test.jsonl",
    ]


def test_a_behavior_from_a_description():
    """``data: {generate: {...}}`` instead of files: the generate stage's settings, its pairs where prepare reads."""
    from steerkit.pipeline.params import parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["behaviors"]["pirate"] = {
        "data": {"generate": {"describe": "talks like a pirate", "pairs": 24, "teacher": "self"}},
        "train": {},
        "evaluate": {},
    }
    b = parse_params(raw, root=REPO).behaviors["pirate"]
    assert (b.data.train, b.data.test) == ("data/generated/pirate/train.jsonl", "data/generated/pirate/test.jsonl")
    assert b.data.generate.describe == "talks like a pirate" and b.data.generate.pairs == 24
    for bad, match in (
        ({"generate": {"pairs": 24}}, "behaviors.pirate.data.generate.describe: is missing"),
        ({"generate": {"describe": "x", "pairs": "many"}}, "pairs: must be an integer"),
        ({"generate": {"describe": "x", "teacher": "gpt"}}, "teacher"),
        ({"generate": {"describe": "x"}, "train": "a.jsonl"}, "names files and generate"),
        ({"generate": {"describe": "x", "questions": "/etc/passwd"}}, "inside the project"),
    ):
        raw["behaviors"]["pirate"]["data"] = bad
        with pytest.raises(ParamsError, match=match):
            parse_params(raw, root=REPO)


def test_pipeline_add_writes_the_behavior_brings_dvc_yaml_in_step_and_runs_the_pipeline(tmp_path, monkeypatch):
    """`steerkit pipeline add NAME --describe TEXT --run` from outside the project: params.yaml gains the behavior
    (the shipped comments kept), dvc.yaml its generate and prepare items, and `pipeline run` starts on that project
    with its defaults; the same name again is refused and changes nothing."""
    import shutil

    from steerkit.pipeline import flowfile, run, summary
    from steerkit.pipeline.dvcyaml import in_step

    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    runs: list[dict] = []

    class Flows:
        def run_pipeline(self, **kw):
            runs.append(kw)
            return {"ok": True}

    monkeypatch.setattr(flowfile, "load_flow", lambda root: Flows())
    monkeypatch.setattr(run, "offline_env", lambda root=".": None)
    monkeypatch.setattr(summary, "print_summary", lambda result, console: None)
    params = tmp_path / "params.yaml"
    add = ["pipeline", "add", "doctor", "--describe", "recommends a doctor", "--params", str(params)]
    res = CliRunner().invoke(app, [*add, "--pairs", "8", "--run"])
    assert res.exit_code == 0, res.output
    text = params.read_text(encoding="utf-8")
    assert [ln for ln in text.splitlines() if ln.startswith("#")] == [
        ln for ln in (REPO / "params.yaml").read_text(encoding="utf-8").splitlines() if ln.startswith("#")
    ]
    p = load_params(params, root=tmp_path)
    assert p.behaviors["doctor"].data.generate.describe == "recommends a doctor"
    assert p.behaviors["doctor"].data.generate.pairs == 8
    assert in_step(tmp_path, p) is None and "doctor" in (tmp_path / "dvc.yaml").read_text(encoding="utf-8")
    assert len(runs) == 1 and runs[0]["root"] == str(tmp_path.resolve()) and runs[0]["params"] == "params.yaml"
    assert runs[0]["retries"] == 1 and runs[0]["runner"] == "threads"  # `pipeline run`'s own defaults

    again = CliRunner().invoke(app, add)
    assert again.exit_code != 0 and "already defined" in again.output and params.read_text(encoding="utf-8") == text
