"""The per-flow-run ledger: a stage run again in the same flow run returns what it finished with."""

from __future__ import annotations

from steerkit.fileio import sha256_tree
from steerkit.pipeline.ledger import RUNS, Ledger


def test_a_finished_stage_is_found_from_any_folder_until_its_outputs_change(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "vectors").mkdir(parents=True)
    (root / "vectors" / "v.safetensors").write_bytes(b"v1")
    result = {"stage": "train", "outputs": {"vectors": sha256_tree(root / "vectors")}}
    ledger = Ledger(root, "run-1")
    ledger.record("train@a", result)
    monkeypatch.chdir(tmp_path)  # a Dask worker starts in its own folder: the outputs are the project's
    assert Ledger(root, "run-1").finished("train@a") == result
    assert Ledger(root, "run-2").finished("train@a") is None  # another flow run runs it again
    assert Ledger(root, None).finished("train@a") is None  # outside a flow run: no ledger
    (root / "vectors" / "v.safetensors").write_bytes(b"v2")  # not what the stage wrote: run it again
    assert ledger.finished("train@a") is None
    ledger.close()
    assert not (root / RUNS / "run-1").exists()
