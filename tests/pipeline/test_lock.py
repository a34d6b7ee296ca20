"""One pipeline run per project: a second run started while one holds the project is refused, clearly."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from steerkit.pipeline.lock import ProjectBusyError, project_lock

from .conftest import load_flows, make_project


def hold(root: str, ready, release) -> None:
    with project_lock(root):
        ready.set()
        release.wait(60)


@pytest.fixture
def held(tmp_path):
    """The project lock held by another process (a cron run, say) until the test ends."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=hold, args=(str(tmp_path), ready, release))
    proc.start()
    assert ready.wait(60)
    yield proc
    if proc.is_alive():  # a killed holder can never acknowledge the event: setting it would wait forever
        release.set()
    proc.join(30)


def test_a_second_holder_is_refused_naming_the_first_and_gets_it_after(tmp_path, held):
    with pytest.raises(ProjectBusyError, match=f"pid {held.pid}") as err:
        with project_lock(tmp_path, wait_s=0.2):
            pass
    assert "STEERKIT_PIPELINE_WAIT_S" in err.value.fix
    held.kill()  # a killed run releases the project with its process
    held.join(30)
    with project_lock(tmp_path, wait_s=5):
        assert (tmp_path / ".pipeline.lock.json").exists()
    assert not (tmp_path / ".pipeline.lock.json").exists()


def test_the_flow_refuses_to_run_beside_another_run(tmp_path, tiny_model_dir, prefect_api, monkeypatch):
    root = make_project(tmp_path / "proj", tiny_model_dir)
    lock_before = (root / "dvc.lock").exists()
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=hold, args=(str(root), ready, release))
    other.start()
    try:
        assert ready.wait(60)
        monkeypatch.chdir(root)
        summary = load_flows(root).run_pipeline(root=str(root), retries=0)
    finally:
        release.set()
        other.join(30)
    assert not summary["ok"] and "another pipeline run holds this project" in summary["message"]
    assert (root / "dvc.lock").exists() == lock_before and not list(
        (root / "vectors").rglob("*.safetensors")
    )  # nothing ran
