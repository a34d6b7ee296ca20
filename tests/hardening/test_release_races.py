"""The release path under races, kills and damaged files, with real processes: nothing is released on a stale
decision, nothing is lost, and a broken history is an error that names it (and is left as it was)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerkit.catalog import releases
from steerkit.catalog.build import rebuild_catalog
from steerkit.catalog.releases import History, promote
from steerkit.cli import app
from steerkit.fileio import sha256_bytes
from steerkit.layout import released_path
from steerkit.vector import SteeringVector

from ..conftest import REPO

DRIVER = Path(__file__).with_name("release_driver.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "STEERKIT_RELEASER": "test", "COLUMNS": "200"}
B = "b"


def _vector(root: Path, name: str, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    path = root / "candidates" / name  # outside vectors/: several files of one behavior
    SteeringVector({3: torch.randn(8, generator=g)}, {"behavior": B, "model": "tiny", "seed": seed}).save(path)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERKIT_RELEASER", "test")
    files = {k: _vector(tmp_path, f"{k}.safetensors", i) for i, k in enumerate(("one", "two", "three", "four"))}
    return tmp_path, files


def _promote(root: Path, path: Path, **kw):
    return promote(root, B, "tiny", "bipo", path.read_bytes(), source=path.relative_to(root).as_posix(), why="t", **kw)


def _cli(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "steerkit.cli", *args, "--root", str(root)],
        cwd=root,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the driver ended (rc {proc.returncode}) early:\n{proc.stdout.read() if proc.stdout else ''}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the driver")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _driver(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_rollback_between_the_gate_and_the_release_releases_nothing(project):
    """The gate judged a candidate against stable v2; a person rolls back to v1 (another process) before the
    catalog stage runs (a third): the release is refused as stale, and v1 stays stable."""
    root, f = project
    _promote(root, f["one"])
    v2 = _promote(root, f["two"])
    candidate = f["three"]
    report = {
        "kind": "gate",
        "behavior": B,
        "model": "tiny",
        "method": "bipo",
        "decision": "promote",
        "reasons": ["all checks pass"],
        "candidate": {
            "path": candidate.relative_to(root).as_posix(),
            "sha256": sha256_bytes(candidate.read_bytes()),
            "summary": {"margin_swing": 1.0},
        },
        "stable": {"version": 2, "sha256": v2.sha256},
        "frozen_set": {"sha256": "e" * 64},
    }
    gate_dir = root / "reports" / "gate" / "tiny"
    gate_dir.mkdir(parents=True)
    (gate_dir / f"{B}.json").write_text(json.dumps(report))
    _cli(root, "catalog", "rollback", B, "--model", "tiny", "--why", "v2 misbehaves")
    out = _cli(root, "catalog", "build", "--release", "reports/gate/tiny").stdout
    assert "stale" in out, out
    history = History.load(root)
    assert [(e.event, e.version) for e in history.events] == [("promote", 1), ("promote", 2), ("rollback", 1)]
    assert history.read(history.stable(B, "tiny", "bipo")) == f["one"].read_bytes()
    # with the rollback undone by a fresh gate that compares against v1, the release goes through
    report["stable"] = {"version": 1, "sha256": history.stable(B, "tiny", "bipo").sha256}
    (gate_dir / f"{B}.json").write_text(json.dumps(report))
    _cli(root, "catalog", "build", "--release", "reports/gate/tiny")
    assert History.load(root).stable(B, "tiny", "bipo").sha256 == report["candidate"]["sha256"]


def test_concurrent_releases_lose_no_event(project):
    root, f = project
    procs = [_driver("promote", str(root), B, str(path)) for path in f.values()]
    for p in procs:
        assert p.wait(120) == 0, p.stdout.read() if p.stdout else ""
    history = History.load(root)
    assert sorted(e.version for e in history.events) == [1, 2, 3, 4]
    assert {e.sha256 for e in history.events} == {sha256_bytes(p.read_bytes()) for p in f.values()}
    for e in history.events:
        assert history.read(e) == (root / e.source).read_bytes()


def test_a_release_killed_midway_loses_nothing_and_its_leftover_is_never_trusted(project):
    root, f = project
    _promote(root, f["one"])
    before = (root / "vectors" / "releases.json").read_bytes()
    marker = root / "copied"
    proc = _driver("promote", str(root), B, str(f["two"]), "--pause-before-save", str(marker))
    _wait_for(marker, proc)
    _kill(proc)
    assert (root / "vectors" / "releases.json").read_bytes() == before  # the history as it was
    leftover = released_path(root, "tiny", B, "bipo", 2)
    assert leftover.read_bytes() == f["two"].read_bytes()  # the copy it had made, with no event naming it
    v2 = _promote(root, f["three"])  # another candidate gets number 2: the leftover is set aside, not trusted
    assert v2.version == 2 and History.load(root).read(v2) == f["three"].read_bytes()
    (aside,) = leftover.parent.glob(f"{leftover.name}.orphan-*")
    assert aside.read_bytes() == f["two"].read_bytes()  # nothing lost either
    again = _promote(root, f["two"])
    assert again.version == 3 and History.load(root).read(again) == f["two"].read_bytes()


def test_a_writer_killed_holding_the_lock_does_not_block_the_next(project, monkeypatch):
    root, f = project
    marker = root / "holding"
    proc = _driver("hold-lock", str(root), str(marker))
    _wait_for(marker, proc)
    _kill(proc)
    monkeypatch.setattr(releases, "LOCK_TIMEOUT_S", 15.0)  # a lock left held would fail here, not hang
    assert _promote(root, f["one"]).version == 1


def _edit_event(**change):
    """A hand edit of the first event (None removes the key)."""

    def edit(text: str) -> str:
        raw = json.loads(text)
        for k, v in change.items():
            if v is None:
                raw["events"][0].pop(k)
            else:
                raw["events"][0][k] = v
        return json.dumps(raw, indent=2)

    return edit


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda t: t[: len(t) // 2], "unreadable"),
        (_edit_event(version="one"), "events\\[0\\].version must be a positive integer"),
        (_edit_event(event="promoted"), "events\\[0\\].event is 'promoted'"),
        (_edit_event(sha256="zz"), "is not a sha256 hex digest"),
        (_edit_event(behavior=None), "unreadable"),
        (_edit_event(extra=1), "unreadable"),
    ],
)
def test_a_corrupt_or_hand_edited_history_is_a_clear_error_and_left_as_it_was(project, edit, said):
    root, f = project
    _promote(root, f["one"])
    rebuild_catalog(root)
    path = root / "vectors" / "releases.json"
    path.write_text(edit(path.read_text()))
    damaged, copies = path.read_bytes(), sorted((root / "vectors" / "released").rglob("*"))
    for args in (
        ("catalog", "ls", "--history"),
        ("catalog", "promote", B, "--model", "tiny", "--why", "x"),
        ("catalog", "rollback", B, "--model", "tiny"),
        ("catalog", "build"),
    ):
        res = CliRunner().invoke(app, [*args, "--root", str(root)])  # in process: no race here, only words
        text = res.output
        assert res.exit_code == 2, (args, text)
        assert "releases.json" in text and "git checkout vectors/releases.json" in text, (args, text)
        assert "Traceback" not in text
    with pytest.raises(releases.ReleaseError, match=said) as err:
        History.load(root)
    assert "nothing was changed" in str(err.value)
    assert path.read_bytes() == damaged and sorted((root / "vectors" / "released").rglob("*")) == copies
