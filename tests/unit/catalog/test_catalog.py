"""The vector catalog: build, query, load with checksum, concurrent writers, the CLI, reads at a git rev."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerkit.catalog.build import build_catalog, rebuild_catalog
from steerkit.catalog.index import AmbiguousEntryError, Catalog, CatalogEntry, CatalogError, NotInCatalogError
from steerkit.cli import app
from steerkit.errors import ChecksumError, SteerkitError, VectorError
from steerkit.fileio import atomic_write_json, sha256_file
from steerkit.layout import report_path, vector_path
from steerkit.vector import SteeringVector

runner = CliRunner()


def _vec(
    behavior: str, model: str = "tiny", method: str = "bipo", layer: int = 3, seed: int = 0, **meta
) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        {layer: torch.randn(8, generator=g)},
        {
            "behavior": behavior,
            "model": model,
            "method": method,
            "layer": layer,
            "model_fingerprint": "f" * 16,
            "hidden_size": 8,
            "data_sha256": "d" * 64,
            "data_file": f"data/pairs/{behavior}/train.jsonl",
            **meta,
        },
    )


def _save(root: Path, vec: SteeringVector) -> Path:
    m = vec.meta
    path = vector_path(root, m["model"], m["behavior"], m["layer"], m["method"])
    vec.save(path)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """A project with 4 vectors (2 behaviors, 2 models, bipo + caa), one eval report, one dvc.lock."""
    root = tmp_path / "proj"
    _save(root, _vec("power-seeking", safe_multipliers=[-1.5, 1.5]))
    _save(root, _vec("power-seeking", method="caa", seed=1))
    _save(root, _vec("power-seeking", model="org/other", seed=2))
    _save(root, _vec("wealth-seeking", seed=3))
    (root / "vectors" / "tiny" / "power-seeking" / "L3.ckpt").write_bytes(b"not a vector")
    atomic_write_json(
        report_path(root, "eval", "tiny", "power-seeking"),
        {"vector": {"layers": [3]}, "summary": {"margin_swing": 4.25, "monotonic_margin": True}},
    )
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare@power-seeking:\n    cmd: steerkit data prepare\n    outs:\n"
        "    - path: data/pairs/power-seeking/train.jsonl\n      hash: md5\n      md5: 0123abcd\n      size: 9\n"
        "  prepare@wealth-seeking:\n    cmd: x\n    outs:\n    - path: data/pairs/wealth-seeking\n"
        "      hash: md5\n      md5: 4567ef.dir\n",
        encoding="utf-8",
    )
    return root


# ------------------------------------------------------------------------------------------- build
def test_build_records_every_vector_with_provenance(tree):
    cat = build_catalog(tree)
    assert [(e.behavior, e.model, e.method) for e in cat] == [
        ("power-seeking", "org/other", "bipo"),
        ("power-seeking", "tiny", "bipo"),
        ("power-seeking", "tiny", "caa"),
        ("wealth-seeking", "tiny", "bipo"),
    ]
    e = cat.find("power-seeking", channel="candidate", model="tiny")
    assert e.path == "vectors/tiny/power-seeking/L3.safetensors"
    assert e.sha256 == sha256_file(tree / e.path)
    assert (e.layers, e.hidden_size, e.model_fingerprint) == ([3], 8, "f" * 16)
    assert e.safe_multiplier_range == [-1.5, 1.5]
    assert e.metrics == {"margin_swing": 4.25, "monotonic_margin": True}
    assert e.data_sha256 == "d" * 64 and e.data_version == "0123abcd"
    assert e.git_rev is None  # tmp_path is no git repository
    assert e.created.endswith("+00:00") and e.steerkit_version and e.format_version == 1
    assert (
        cat.find("power-seeking", channel="candidate", model="tiny", method="caa").metrics == {}
    )  # its report would be <b>.caa.json
    assert cat.find("wealth-seeking", channel="candidate").data_version == "4567ef.dir"  # the folder holding the data
    assert cat.find("wealth-seeking", channel="candidate").safe_multiplier_range is None


def test_rebuilding_an_unchanged_tree_gives_identical_bytes(tree):
    rebuild_catalog(tree)
    first = (tree / "vectors" / "catalog.json").read_bytes()
    rebuild_catalog(tree)
    assert (tree / "vectors" / "catalog.json").read_bytes() == first
    obj = json.loads(first)
    assert set(obj) == {"format", "format_version", "entries"} and obj["format"] == "steerkit.catalog"
    assert [e["behavior"] for e in obj["entries"]] == ["power-seeking"] * 3 + ["wealth-seeking"]


def test_a_corrupt_vector_file_fails_the_build_naming_it(tree):
    bad = tree / "vectors" / "tiny" / "broken" / "L3.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(VectorError, match="broken"):
        build_catalog(tree)


def test_report_for_another_layer_is_not_attributed(tree):
    _save(tree, _vec("wealth-seeking", layer=5, seed=9))
    atomic_write_json(
        report_path(tree, "eval", "tiny", "wealth-seeking"),
        {"vector": {"layers": [5]}, "summary": {"margin_swing": 1.0}},
    )
    cat = build_catalog(tree)
    assert cat.find("wealth-seeking", channel="candidate", layer=5).metrics == {"margin_swing": 1.0}
    assert cat.find("wealth-seeking", channel="candidate", layer=3).metrics == {}


# ---------------------------------------------------------------------------------------- querying
def test_find_errors_list_what_exists(tree):
    cat = build_catalog(tree)
    with pytest.raises(NotInCatalogError, match="no vector for behavior 'sycophancy'") as none:
        cat.find("sycophancy", channel="candidate")
    assert "power-seeking" in str(none.value) and "wealth-seeking" in str(none.value) and "org/other" in str(none.value)
    with pytest.raises(AmbiguousEntryError, match="2 vectors match") as many:
        cat.find("power-seeking", channel="candidate")
    assert "model=tiny" in str(many.value) and "model=org/other" in str(many.value)
    assert many.value.fix.startswith("narrow it down with model=")  # in Python's words (the CLI says --model: below)
    with pytest.raises(NotInCatalogError, match="method=bipo layers=\\[3\\]"):
        cat.find("power-seeking", channel="candidate", model="tiny", layer=7)
    assert (
        cat.find("power-seeking", channel="candidate", model="org--other").model == "org/other"
    )  # the folder name works too
    with pytest.raises(AmbiguousEntryError):
        cat.find("power-seeking", channel="candidate", model="tiny", method=None)
    assert isinstance(none.value, SteerkitError) and isinstance(none.value, LookupError)


def test_load_verifies_the_checksum(tree):
    rebuild_catalog(tree)
    cat = Catalog.open(tree)
    vec = cat.load("power-seeking", channel="candidate", model="tiny")
    assert torch.equal(
        vec.layers[3],
        SteeringVector.load(tree / cat.find("power-seeking", channel="candidate", model="tiny").path).layers[3],
    )
    entry = cat.find("wealth-seeking", channel="candidate")
    f = tree / entry.path
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last tensor byte: still a valid safetensors file
    f.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        cat.load(entry)
    msg = str(err.value)
    assert entry.path in msg and entry.sha256 in msg and "rebuild the catalog" in msg and "dvc pull" in msg
    f.unlink()
    with pytest.raises(CatalogError, match="missing"):
        cat.load(entry)


def test_open_accepts_the_file_path_and_refuses_paths_outside_the_project(tree):
    rebuild_catalog(tree)
    cat = Catalog.open(tree / "vectors" / "catalog.json")
    assert cat.root == tree and len(cat) == 4
    evil = CatalogEntry(**{**cat.find("wealth-seeking", channel="candidate").to_dict(), "path": "../../etc/passwd"})
    with pytest.raises(CatalogError, match="not a relative path inside the project"):
        cat.load(evil)


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"format": "other", "format_version": 1, "entries": []}', "not a steerkit catalog"),
        ('{"format": "steerkit.catalog", "format_version": 99, "entries": []}', "newer than this steerkit"),
        ('{"format": "steerkit.catalog", "entries": []}', "lacks the key 'format_version'"),
        (
            '{"format": "steerkit.catalog", "format_version": 1, "entries": [{"behavior": "x"}]}',
            "entries\\[0\\] lacks the key 'method'",
        ),
    ],
)
def test_invalid_catalog_files_give_clear_errors(tmp_path, text, match):
    path = tmp_path / "vectors" / "catalog.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(CatalogError, match=match) as err:
        Catalog.open(tmp_path)
    assert str(path) in str(err.value) and "fix:" in str(err.value)
    rebuild_catalog(tmp_path)  # the fix it names: the catalog is derived from the vectors, so a rebuild replaces it
    assert len(Catalog.open(tmp_path)) == 0


def test_missing_catalog_says_how_to_make_it(tmp_path):
    with pytest.raises(CatalogError, match="steerkit catalog build"):
        Catalog.open(tmp_path)


# ----------------------------------------------------------------------------------------- writing
def _rebuild_many(root: str, worker: int, n: int) -> None:
    """Add vectors and rebuild the catalog after each, as the catalog stage does (in another process)."""
    for i in range(n):
        _save(Path(root), _vec(f"w{worker}-{i}", seed=worker * 100 + i))
        rebuild_catalog(root)


def test_concurrent_rebuilds_leave_a_whole_catalog_of_every_vector(tmp_path):
    """Two processes rebuilding at once (the lock serialises them): every catalog written is whole, and the
    last one lists every vector."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_rebuild_many, args=(str(tmp_path), w, 6)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    rebuild_catalog(tmp_path)
    want = sorted(f"w{w}-{i}" for w in range(2) for i in range(6))
    assert sorted(e.behavior for e in Catalog.open(tmp_path)) == want
    assert not list((tmp_path / "vectors").glob(".catalog.json.*.tmp"))  # no temporary files left behind


# --------------------------------------------------------------------------------------------- CLI
def test_cli_build_ls_show_get(tree, tmp_path, monkeypatch):
    from rich.console import Console

    import steerkit.cli.catalog

    monkeypatch.setattr(steerkit.cli.catalog, "console", Console(width=200))  # no folding of long names
    res = runner.invoke(app, ["catalog", "build", "--root", str(tree)])
    assert res.exit_code == 0, res.output
    assert "4 vectors" in res.output and (tree / "vectors" / "catalog.json").exists()

    res = runner.invoke(app, ["catalog", "ls", "--root", str(tree)])
    assert res.exit_code == 0, res.output
    assert "wealth-seeking" in res.output and "org/other" in res.output and "+4.25" in res.output
    assert "[-1.5, 1.5]" in res.output

    res = runner.invoke(app, ["catalog", "ls", "--root", str(tree), "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)["entries"]) == 4

    res = runner.invoke(
        app,
        [
            "catalog",
            "show",
            "power-seeking",
            "--channel",
            "candidate",
            "--model",
            "tiny",
            "--root",
            str(tree),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["path"] == "vectors/tiny/power-seeking/L3.safetensors" and shown["metrics"]["margin_swing"] == 4.25

    res = runner.invoke(
        app,
        [
            "catalog",
            "show",
            "power-seeking",
            "--channel",
            "candidate",
            "--model",
            "tiny",
            "--method",
            "caa",
            "--root",
            str(tree),
        ],
    )
    assert res.exit_code == 0 and "L3.caa.safetensors" in res.output

    out = tmp_path / "got" / "v.safetensors"
    res = runner.invoke(
        app, ["catalog", "get", "wealth-seeking", "--channel", "candidate", "--out", str(out), "--root", str(tree)]
    )
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == (tree / "vectors" / "tiny" / "wealth-seeking" / "L3.safetensors").read_bytes()


def test_cli_errors_are_one_clear_message(tree, tmp_path):
    rebuild_catalog(tree)
    res = runner.invoke(app, ["catalog", "show", "power-seeking", "--channel", "candidate", "--root", str(tree)])
    assert res.exit_code == 2 and "error:" in res.stderr and "--model" in res.stderr
    assert "Traceback" not in res.output
    res = runner.invoke(
        app, ["catalog", "get", "nope", "--channel", "candidate", "--out", str(tmp_path / "x"), "--root", str(tree)]
    )
    assert res.exit_code == 2 and "wealth-seeking" in res.stderr and not (tmp_path / "x").exists()
    f = tree / "vectors" / "tiny" / "wealth-seeking" / "L3.safetensors"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    res = runner.invoke(
        app,
        [
            "catalog",
            "get",
            "wealth-seeking",
            "--channel",
            "candidate",
            "--out",
            str(tmp_path / "y"),
            "--root",
            str(tree),
        ],
    )
    assert res.exit_code == 2 and "sha256" in res.stderr and not (tmp_path / "y").exists()
    res = runner.invoke(app, ["catalog", "ls", "--root", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "catalog build" in res.stderr


# ------------------------------------------------------------------------------- git/DVC revisions
def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def test_reading_a_repository_at_an_earlier_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    old = _vec("power-seeking", seed=1)
    _save(repo, old)
    rebuild_catalog(repo)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "v1")
    rev1 = _git(repo, "rev-parse", "HEAD")
    old_sha = Catalog.open(repo).find("power-seeking", channel="candidate").sha256

    _save(repo, _vec("power-seeking", seed=2))  # retrained
    cat_now = rebuild_catalog(repo)
    assert cat_now.find("power-seeking", channel="candidate").git_rev == rev1  # HEAD when it was built
    _git(repo, "commit", "-q", "-a", "-m", "v2")

    at1 = Catalog.open(str(repo), rev=rev1)
    entry = at1.find("power-seeking", channel="candidate")
    assert entry.sha256 == old_sha != cat_now.find("power-seeking", channel="candidate").sha256
    assert torch.equal(at1.load(entry).layers[3], old.layers[3])  # the old bytes, read through dvc.api
    assert (
        Catalog.from_repo(str(repo), "HEAD").find("power-seeking", channel="candidate").sha256
        == cat_now.find("power-seeking", channel="candidate").sha256
    )

    out = tmp_path / "old.safetensors"
    res = runner.invoke(
        app,
        [
            "catalog",
            "get",
            "power-seeking",
            "--channel",
            "candidate",
            "--out",
            str(out),
            "--repo",
            str(repo),
            "--rev",
            rev1,
        ],
    )
    assert res.exit_code == 0, res.output
    assert sha256_file(out) == old_sha
    res = runner.invoke(app, ["catalog", "ls", "--repo", str(repo), "--rev", "no-such-rev"])
    assert res.exit_code == 2 and "no-such-rev" in res.stderr
