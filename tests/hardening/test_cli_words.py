"""What a person at the terminal reads: every error a command prints names the command's own options
(``--format``, ``--columns``), never a Python parameter (``fmt=``); the cases a new user hit read as
they should; tables keep identifiers whole at 80 columns.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerkit.cli import app
from steerkit.vector import SteeringVector

from ..conftest import REPO

#: a Python keyword argument in a fix: ``fmt=``, ``fmt='x'``, ``layer=2``, ``mapping={`` (not ``question=prompt``)
PYTHON_WORDS = re.compile(r"(?<![\w.-])[a-z_]{2,}=(?=[\s'\"\[{(\d,)]|$)")


def run(*args: object, width: int = 80) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})
    return res.exit_code, res.output


def vec(path: Path, layer: int = 1, **meta: object) -> Path:
    SteeringVector({layer: torch.ones(32)}, {"model": "tiny", **meta}).save(path)
    return path


def gguf(path: Path) -> Path:
    from steerkit.export import to_llamacpp_gguf

    return to_llamacpp_gguf(SteeringVector({3: torch.ones(8)}, {"model": "tiny"}), path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


#: (id, how to make it, the command, what the message must say)
CASES = [
    (
        "empty-file",
        lambda t: write(t / "empty.jsonl", ""),
        ["data", "prepare", "x", "{0}", "--root", "{t}"],
        ["empty.jsonl: the file is empty"],
    ),
    (
        "folder",
        lambda t: (t / "somefolder").mkdir() or t / "somefolder",
        ["data", "prepare", "x", "{0}", "--root", "{t}"],
        ["somefolder: is a folder, not a data file"],
    ),
    (
        "no-extension",
        lambda t: write(t / "pairs", "q,a,b\n"),
        ["data", "prepare", "x", "{0}", "--root", "{t}"],
        [
            "cannot tell the format of a file without an extension",
            "--format bipo-csv",
            "--columns question=prompt,matching=chosen,not_matching=rejected",
        ],
    ),
    (
        "not-bipo-csv",
        lambda t: write(t / "t.csv", "prompt,chosen,rejected\nq,a,b\n"),
        ["data", "prepare", "x", "{0}", "--root", "{t}"],
        ["is not a BiPO header", "--columns question=prompt"],
    ),
    (
        "columns-bad-field",
        lambda t: write(t / "t.csv", "prompt,chosen,rejected\nq,a,b\n"),
        ["data", "prepare", "x", "{0}", "--root", "{t}", "--columns", "prompt=question"],
        ["unknown field 'prompt'", "--columns"],
    ),
    (
        "columns-read",
        lambda t: write(t / "t.csv", "prompt,chosen,rejected\nq1,a,b\nq2,c,d\nq3,e,f\nq4,g,h\nq5,i,j\n"),
        [
            "data",
            "prepare",
            "x",
            "{0}",
            "--root",
            "{t}",
            "--columns",
            "question=prompt,matching=chosen,not_matching=rejected",
        ],
        None,
    ),  # not an error: the mapping reads the table
    (
        "gguf-as-vector",
        lambda t: gguf(t / "cv.gguf"),
        ["vector", "info", "{0}"],
        ["this is a GGUF file", "steerkit vector import"],
    ),
    (
        "pickle-as-vector",
        lambda t: torch.save(torch.ones(3), t / "v.pt") or t / "v.pt",
        ["vector", "info", "{0}"],
        ["pickle", "steerkit vector import-pt"],
    ),
    (
        "eval-no-behavior",
        lambda t: vec(t / "v.safetensors"),
        ["evaluate", "--vector", "{0}", "--test", str(REPO / "data/seed/power-seeking/test.jsonl")],
        ["names no behavior", "--out reports/eval/"],
    ),
    (
        "eval-bad-judge",
        lambda t: vec(t / "v.safetensors", behavior="b"),
        ["evaluate", "--vector", "{0}", "--test", "t.jsonl", "--judge", "gpt"],
        ["--judge", "must be one of"],
    ),
    (
        "eval-bad-multiplier",
        lambda t: vec(t / "v.safetensors", behavior="b"),
        ["evaluate", "--vector", "{0}", "--test", "t.jsonl", "-x", "two"],
        ["--multiplier 'two' is not a number"],
    ),
    (
        "compose-weights",
        lambda t: vec(t / "v.safetensors", behavior="b"),
        ["compose", "--vector", "{0}", "--weight", "1", "--weight", "2", "--test", "b=x.jsonl"],
        ["1 vectors but 2 weights", "--weight"],
    ),
    (
        "compose-tests",
        lambda t: vec(t / "v.safetensors", behavior="b"),
        ["compose", "--vector", "{0}", "--test", "b"],
        ["--test", "BEHAVIOR=FILE"],
    ),
    (
        "export-layer0",
        lambda t: vec(t / "v.safetensors", layer=0),
        ["export", "{0}", "--out", "{t}/cv.gguf"],
        ["cannot steer layer 0"],
    ),
    (
        "import-pt-no-layer",
        lambda t: torch.save(torch.ones(3), t / "v.pt") or t / "v.pt",
        ["vector", "import", "{0}", "--out", "{t}/v.safetensors"],
        ["--layer"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_errors_speak_the_clis_words(case, tmp_path, monkeypatch):
    name, make, argv, expected = case
    monkeypatch.chdir(tmp_path)
    made = make(tmp_path)
    code, out = run(*[a.format(made, t=tmp_path) for a in argv])
    if expected is None:
        assert code == 0, out
        return
    text = " ".join(out.split())  # the message, unwrapped
    assert code == 2 and text.startswith("error: ") and "Traceback" not in out, out
    for part in expected:
        assert part in text, f"{name}: {part!r} not in {text!r}"
    fix = text.split(" fix: ", 1)[1] if " fix: " in text else ""
    assert not PYTHON_WORDS.search(fix), f"{name}: the fix names a Python parameter: {fix!r}"


def test_the_python_api_gets_python_words(tmp_path):
    """The same mistakes through the library name its parameters (a caller has no --format)."""
    from steerkit.data.readers import read_pairs
    from steerkit.errors import DataError

    write(tmp_path / "pairs", "q,a,b\n")
    with pytest.raises(DataError) as info:
        read_pairs(tmp_path / "pairs")
    assert "fmt='bipo-csv'" in info.value.fix and "mapping={'question': 'prompt'" in info.value.fix


def test_catalog_ls_keeps_identifiers_whole_at_80_columns(tmp_path):
    from steerkit.catalog.build import rebuild_catalog

    for behavior in ("power-seeking", "wealth-seeking", "a-much-longer-behavior-name-for-the-team"):
        vec(
            tmp_path / f"vectors/smollm2-135m-instruct/{behavior}/L15.safetensors",
            15,
            behavior=behavior,
            model="smollm2-135m-instruct",
        )
    rebuild_catalog(tmp_path)
    for width in (80, 200):
        code, out = run("catalog", "ls", "--root", tmp_path, width=width)
        assert code == 0, out
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= width
        for ident in (
            "power-seeking",
            "wealth-seeking",
            "a-much-longer-behavior-name-for-the-team",
            "smollm2-135m-instruct",
        ):
            assert any(ident in line for line in lines), (width, ident, out)


def test_pipeline_check_keeps_behavior_names_whole_at_80_columns(monkeypatch):
    monkeypatch.chdir(REPO)
    code, out = run("pipeline", "check", "--with", "bipo", width=80)
    for ident in ("power-seeking", "wealth-seeking", "bipo-power-seeking", "bipo-wealth-seeking"):
        assert any(ident in line for line in out.splitlines()), ident
    table = out.split("error:")[0].splitlines()  # the data files are missing here: an error follows the table
    assert max(len(line) for line in table if "→" not in line) <= 80
