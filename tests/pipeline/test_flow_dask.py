"""The flow on a real Dask cluster of worker *processes*, started the way a cluster's nodes start them
(``dask worker ADDRESS``, from another working folder), against one Prefect API.

The reference is the same tiny project's first run on the threads runner (test_flow.py's, kept for the session;
run here when this module runs alone). The threads run forks its stages from the warm server; on the cluster,
gpu-0 forks too and the daemonic workers execute a fresh interpreter per stage: the byte-for-byte agreement is also
the check that both ways compute the same.

1. the cluster run, GPU stages asking for ``GPU=1`` (two workers have it, one does not), and the
   worker process running a training stage SIGKILLed in its middle: the stage dies with it, Dask runs
   it again on a GPU worker, the run completes, and its outputs, ``dvc.lock`` and catalog are those
   of the threads run; every model stage ran on a GPU worker;
2. a stage that fails on the cluster (retries exhausted): nothing committed, catalog unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from steerkit.catalog.releases import History

from .conftest import BEHAVIORS, dvc_status, load_flows, make_project, tool_env, write_params

A, B = BEHAVIORS
WORKERS = {"gpu-0": ["--resources", "GPU=1"], "gpu-1": ["--resources", "GPU=1"], "cpu-0": []}  # docs/cluster.md
#: gpu-0's worker process is not daemonic, so it forks its stages from a warm server (steerkit.pipeline.launch); the
#: others are Dask's default, daemonic, and execute a fresh interpreter per stage: the run mixes both ways
FORKS = {"gpu-0"}


@pytest.fixture(scope="module")
def cluster(prefect_api, tmp_path_factory):
    """A scheduler and three worker processes (nanny + worker each): ``gpu-0`` and ``gpu-1`` with GPU=1 (a node
    per GPU, as docs/cluster.md starts them), ``cpu-0`` without; yields its address and the nannies' pids."""
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL

    scheduler = LocalCluster(n_workers=0, processes=True, dashboard_address=None, scheduler_port=0)
    env = {**tool_env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "OMP_NUM_THREADS": "1"}  # as the threads run
    elsewhere = tmp_path_factory.mktemp("worker-node")  # workers start in another folder, as on another machine
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                scheduler.scheduler_address,
                "--nthreads",
                "1",
                "--name",
                name,
                "--no-dashboard",
                *extra,
            ],
            cwd=elsewhere,
            env={**env, "DASK_DISTRIBUTED__WORKER__DAEMON": str(name not in FORKS)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for name, extra in WORKERS.items()
    ]
    with Client(scheduler.scheduler_address, timeout=120) as client:
        client.wait_for_workers(len(WORKERS), timeout=180)
    yield scheduler.scheduler_address, {p.pid for p in procs}
    for p in procs:
        p.kill()
        p.wait(30)
    scheduler.close()


@pytest.fixture(scope="module")
def projects(tmp_path_factory, tiny_model_dir, first_run):
    """The threads runner's first run of the tiny project (kept from test_flow.py) and a fresh project."""
    return first_run, make_project(tmp_path_factory.mktemp("dask") / "cluster", tiny_model_dir)


def stage_pids(stage: str, name: str) -> list[int]:
    """Processes running ``steerkit pipeline stage STAGE NAME`` (executed, or forked and titled so)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or []).split()
        if "stage" in cmd and stage in cmd and name in cmd and "pipeline" in cmd:
            out.append(p.pid)
    return out


def worker_of(pid: int, nannies: set[int]):
    """The Dask worker process above ``pid``: its child (executed stage) or grandchild (forked, via its server)."""
    import psutil

    p = psutil.Process(pid)
    while p.ppid() not in nannies:
        p = p.parent()
    return p


def kill_worker_during(stage: str, name: str, nannies: set[int], log: list) -> threading.Thread:
    """SIGKILL the worker process that runs ``stage NAME`` once it has started (its nanny restarts it)."""
    import psutil

    def watch() -> None:
        deadline = time.time() + 600
        while time.time() < deadline:
            for pid in stage_pids(stage, name):
                try:
                    worker = worker_of(pid, nannies)
                    time.sleep(1.0)  # mid-stage: the model is loading or training
                    log.append((pid, worker.pid))
                    worker.kill()
                    return
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def catalog_view(root: Path) -> list:
    """The catalog's entries without what differs between two projects (their paths, times, git revisions)."""
    volatile = {"created", "git_rev", "released"}  # when and at which commit: the projects' own history
    entries = json.loads((root / "vectors/catalog.json").read_text())["entries"]
    return sorted(
        (json.dumps({k: v for k, v in e.items() if k not in volatile}, sort_keys=True) for e in entries),
    )


def test_1_worker_processes_survive_a_killed_worker_and_agree_with_threads(projects, cluster, monkeypatch):
    threads_root, root = projects
    address, nannies = cluster
    monkeypatch.chdir(root)
    killed: list = []
    watcher = kill_worker_during("train", A, nannies, killed)
    summary = load_flows(root).run_pipeline(root=str(root), dask_address=address, gpu_workers=True, retries=1)
    watcher.join(1)
    assert summary["ok"], summary["message"]
    assert killed, "the training stage was never seen running"
    stage_pid, worker_pid = killed[0]
    assert not Path(f"/proc/{stage_pid}").exists() or stage_pids("train", A) == []  # died with its worker
    assert not any((root / ".cache" / "pipeline-staging").glob("*"))  # what it had staged: swept by its retry
    placement = summary["placement"]
    assert placement.pop("catalog")["worker"] is None  # built by the flow itself, after the commit
    assert placement and all(p["worker"] in WORKERS for p in placement.values())  # the rest on the cluster's workers
    from steerkit.pipeline.graph import spec

    model_stages = {a: p for a, p in placement.items() if spec(a.split("@")[0]).device}
    gpu_workers = {w for w in WORKERS if w.startswith("gpu")}
    assert f"train@{A}" in model_stages and {p["worker"] for p in model_stages.values()} <= gpu_workers
    how = {a: (p["worker"], p["process"]) for a, p in placement.items()}
    assert all(p == ("forked" if w in FORKS else "executed") for w, p in how.values()), how
    # the same results as the threads runner, byte for byte: every stage's deps and outs in dvc.lock (the
    # catalog's own file differs only by its project's provenance: git revision and file times; the release
    # history the gates read records when and by whom each release was made: the same releases otherwise)
    lock, ref = (yaml.safe_load((r / "dvc.lock").read_text())["stages"] for r in (root, threads_root))
    assert lock.keys() == ref.keys() and len(lock) == 2 * 5 + 3

    def timeless(stages: dict) -> dict:
        return {
            k: {**v, "deps": [d for d in v.get("deps", []) if d["path"] != "vectors/releases.json"]}
            for k, v in stages.items()
            if k != "catalog"
        }

    assert timeless(lock) == timeless(ref)
    assert lock["catalog"]["deps"] == ref["catalog"]["deps"]
    events = [
        [(e.event, e.behavior, e.version, e.sha256) for e in History.load(r).events] for r in (root, threads_root)
    ]
    assert events[0] == events[1] and events[0]
    assert catalog_view(root) == catalog_view(threads_root)
    assert dvc_status(root) == {}


def test_2_a_failed_stage_on_the_cluster_commits_nothing(projects, cluster, monkeypatch):
    _, root = projects
    monkeypatch.chdir(root)
    lock, catalog = (root / "dvc.lock").read_bytes(), (root / "vectors/catalog.json").read_bytes()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["layer"] = 99  # the tiny model has 4 layers: every training fails, on the worker
    write_params(root, params)
    summary = load_flows(root).run_pipeline(
        root=str(root), dask_address=cluster[0], gpu_workers=True, retries=1, retry_delay_seconds=0
    )
    assert not summary["ok"] and f"train@{A}" in summary["failed"] and "layer 99" in summary["failed"][f"train@{A}"]
    assert summary["committed"] == [] and (root / "dvc.lock").read_bytes() == lock
    assert (root / "vectors/catalog.json").read_bytes() == catalog
    assert not any((root / ".cache" / "pipeline-staging").glob("*"))  # no half-written folder left
