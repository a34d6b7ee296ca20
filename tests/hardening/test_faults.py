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
import torch

from steerkit import fileio
from steerkit.catalog import build as catalog
from steerkit.catalog.index import Catalog
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


# ------------------------------------------------------------------------ a killed writer's scratch
WRITER = (
    "import sys, time; from steerkit.fileio import scratch_dir; p = scratch_dir(sys.argv[1], 'vec.'); "
    "p.mkdir(parents=True); print(p, flush=True); time.sleep(120)"
)


def test_a_killed_writers_scratch_folder_is_swept_by_the_next_writer_and_no_other(tmp_path):
    """A stage killed while its vectors were in staging (a Dask worker lost mid-stage) leaves its folder; the next
    writer into the same place removes it — not a live writer's, not another host's (a shared filesystem)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    killed = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait(30)
    elsewhere = tmp_path / "vec.other-node-12345.0badc0de"
    unrelated = tmp_path / "lora.dead-1.00000000"
    for folder in (elsewhere, unrelated):
        folder.mkdir()
    assert killed.is_dir()
    live = fileio.scratch_dir(tmp_path, "vec.")  # the next writer, this process: the killed one's folder goes
    assert not killed.exists() and elsewhere.is_dir() and unrelated.is_dir() and not live.exists()
    live.mkdir()
    fresh = fileio.scratch_dir(tmp_path, "vec.")  # a running writer's folder stays
    assert live.is_dir() and fresh != live and fresh.parent == tmp_path and fresh.name.startswith("vec.")


# ----------------------------------------------------------------------------- catalog, crashed
def _vector(root: Path, behavior: str, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    SteeringVector({3: torch.randn(8, generator=g)}, {"behavior": behavior, "model": "tiny"}).save(
        root / "vectors" / "tiny" / behavior / "L3.safetensors"
    )


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_catalog_write_failing_mid_write_keeps_the_old_catalog(tmp_path, monkeypatch):
    """The catalog stage's writer (``rebuild_catalog``) on a full disk: the old catalog stays, the lock is freed."""
    path = tmp_path / "vectors" / "catalog.json"
    _vector(tmp_path, "a")
    _vector(tmp_path, "b", 1)
    catalog.rebuild_catalog(tmp_path)
    before = path.read_bytes()
    _vector(tmp_path, "c", 2)

    def full_disk(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full_disk)
    with pytest.raises(StorageError) as err:
        catalog.rebuild_catalog(tmp_path)
    assert str(path) == err.value.where and "free disk space" in err.value.fix
    assert path.read_bytes() == before and not _temp_files(path.parent)
    monkeypatch.undo()
    t0 = time.monotonic()
    catalog.rebuild_catalog(tmp_path)  # the lock was released
    assert time.monotonic() - t0 < 5
    assert [e.behavior for e in Catalog.open(path)] == ["a", "b", "c"]


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from steerkit import fileio
    from steerkit.catalog.build import rebuild_catalog

    def stall(fd):  # the new catalog is written to its temp file: say so, then hang until killed
        Path({marker!r}).write_text("writing")
        time.sleep(120)

    fileio.os.fsync = stall
    rebuild_catalog({root!r})
""")


def test_catalog_writer_killed_while_holding_the_lock(tmp_path, monkeypatch):
    path = tmp_path / "vectors" / "catalog.json"
    marker = tmp_path / "writing"
    _vector(tmp_path, "a")
    catalog.rebuild_catalog(tmp_path)
    before = path.read_bytes()
    _vector(tmp_path, "c", 2)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=str(REPO), marker=str(marker), root=str(tmp_path))],
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
    catalog.rebuild_catalog(tmp_path)  # the dead writer's lock is gone with its process
    assert [e.behavior for e in Catalog.open(path)] == ["a", "c"]
    # the killed writer's temp file may remain; it is hidden, never read, and the build skips it
    assert all(p.name.startswith(".catalog.json.") for p in _temp_files(path.parent))
    assert [p.parent.name for p in catalog.vector_files(tmp_path)] == ["a", "c"]
