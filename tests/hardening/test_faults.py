"""Faults: a training run killed mid-epoch, and catalog writers that crash or are killed mid-write.

(Two writers at once losing no entry is ``tests/unit/catalog/test_catalog.py::test_concurrent_writers_lose_nothing``;
here: what a crash or a SIGKILL in the middle of a write leaves behind.)
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from steerkit import fileio
from steerkit.catalog import build as catalog
from steerkit.catalog.build import add_entry
from steerkit.catalog.index import Catalog, CatalogEntry
from steerkit.errors import StorageError
from steerkit.packing import encode_pairs
from steerkit.train import bipo
from steerkit.vector import SteeringVector

from ..conftest import REPO, TinyTokenizer, random_pairs, tiny_model

DRIVER = Path(__file__).with_name("train_driver.py")
STEPS_PER_EPOCH = 6  # 24 random pairs, batch size 4 (the driver's CFG)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}:\n{out}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _steps(path: Path) -> list[int]:
    return [int(s) for s in path.read_text().split()] if path.exists() else []


def _checkpoint_step(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["step"])


# ------------------------------------------------------------------------------- training, killed
def test_training_killed_mid_epoch_resumes_to_the_same_vector(tmp_path):
    ckpt, out, steps = tmp_path / "v.ckpt", tmp_path / "v.safetensors", tmp_path / "steps.txt"
    cmd = [sys.executable, str(DRIVER), str(ckpt), str(out), str(steps)]
    proc = subprocess.Popen(
        [*cmd, "--sleep", "0.25"], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(ckpt.exists, 180, "the first epoch's checkpoint", proc)
        # in the middle of epoch 2: past its first step, before its last
        _wait_for(lambda: len(_steps(steps)) >= STEPS_PER_EPOCH + 2, 60, "two steps of epoch 2", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    done = _steps(steps)
    assert proc.returncode == -signal.SIGKILL
    assert STEPS_PER_EPOCH < done[-1] < 2 * STEPS_PER_EPOCH, f"not killed mid-epoch 2: steps {done}"
    assert not out.exists()
    assert _checkpoint_step(ckpt) == STEPS_PER_EPOCH  # the last complete epoch, a whole file

    steps.unlink()
    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _steps(steps) == list(range(STEPS_PER_EPOCH + 1, 4 * STEPS_PER_EPOCH + 1))  # replayed from epoch 2

    full = bipo.train(
        tiny_model("llama", seed=0),
        encode_pairs(TinyTokenizer(), random_pairs()),
        bipo.BipoConfig(layer=1, epochs=4, batch_size=4, warmup_steps=2, lr=1e-2, seed=0),
        0,
        progress=False,
    )
    got = SteeringVector.load(out)
    assert got.layer_ids == [1]
    assert float((got.layers[1] - full.vector.layers[1]).abs().max()) <= 1e-6
    assert got.meta["steps"] == len(full.log) == 4 * STEPS_PER_EPOCH


# ----------------------------------------------------------------------------- catalog, crashed
def _entry(behavior: str) -> CatalogEntry:
    return CatalogEntry(
        behavior=behavior,
        method="bipo",
        model="tiny",
        layers=[3],
        hidden_size=8,
        path=f"vectors/tiny/{behavior}/L3.safetensors",
        sha256="a" * 64,
    )


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_catalog_write_failing_mid_write_keeps_the_old_catalog(tmp_path, monkeypatch):
    path = tmp_path / "vectors" / "catalog.json"
    add_entry(path, _entry("a"))
    add_entry(path, _entry("b"))
    before = path.read_bytes()

    def full_disk(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full_disk)
    with pytest.raises(StorageError) as err:
        add_entry(path, _entry("c"))
    assert str(path) == err.value.where and "free disk space" in err.value.fix
    assert path.read_bytes() == before and not _temp_files(path.parent)
    monkeypatch.undo()
    t0 = time.monotonic()
    add_entry(path, _entry("c"))  # the lock was released
    assert time.monotonic() - t0 < 5
    assert [e.behavior for e in Catalog.open(path)] == ["a", "b", "c"]


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from steerkit import fileio
    from steerkit.catalog.build import add_entry
    from steerkit.catalog.index import CatalogEntry

    def stall(fd):  # the new catalog is written to its temp file: say so, then hang until killed
        Path({marker!r}).write_text("writing")
        time.sleep(120)

    fileio.os.fsync = stall
    add_entry({path!r}, CatalogEntry(behavior="b", method="bipo", model="tiny", layers=[3], hidden_size=8,
                                     path="vectors/tiny/b/L3.safetensors", sha256="a" * 64))
""")


def test_catalog_writer_killed_while_holding_the_lock(tmp_path, monkeypatch):
    path = tmp_path / "vectors" / "catalog.json"
    marker = tmp_path / "writing"
    add_entry(path, _entry("a"))
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=str(REPO), marker=str(marker), path=str(path))],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(marker.exists, 120, "the child to be mid-write", child)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert path.read_bytes() == before  # the old catalog, whole and readable
    assert [e.behavior for e in Catalog.open(path)] == ["a"]
    monkeypatch.setattr(catalog, "LOCK_TIMEOUT_S", 15.0)  # a lock left held would fail here, not hang 120 s
    add_entry(path, _entry("c"))  # the dead writer's lock is gone with its process
    assert [e.behavior for e in Catalog.open(path)] == ["a", "c"]
    # the killed writer's temp file may remain; it is hidden, never read, and the build skips it
    assert all(p.name.startswith(".catalog.json.") for p in _temp_files(path.parent))
    assert catalog.vector_files(tmp_path) == []
