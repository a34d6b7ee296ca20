"""Device placement without a GPU: a simulated pool of devices, the pinning each stage's process
receives, the one-stage-per-device limit, file-only stages that never wait, and stages that end
with the process that started them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from steerkit.errors import SteerkitError
from steerkit.pipeline import devices, graph, run
from steerkit.pipeline.devices import DevicePool, Devices, parse_devices

from .conftest import alive


def test_parse_devices():
    assert parse_devices("auto", visible=lambda: ("cuda:0", "cuda:1")) == Devices(("cuda:0", "cuda:1"))
    assert parse_devices(None, visible=lambda: ()) == Devices()
    assert parse_devices("cpu", visible=lambda: ("cuda:0",)) == Devices((), forced_cpu=True)
    assert parse_devices(" cuda:2, cuda:0 ").gpus == ("cuda:2", "cuda:0")
    for bad, says in (("gpu0", "gpu0 is not cuda:N"), ("cuda:0,cuda:0", "named twice"), (",", "cannot read")):
        with pytest.raises(SteerkitError, match=says) as err:
            parse_devices(bad)
        assert err.value.where == "--devices" and "cuda:0,cuda:1" in err.value.fix


def test_each_device_is_pinned_through_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    two = Devices(("cuda:0", "cuda:1"))
    assert two.env("cuda:1") == {"CUDA_VISIBLE_DEVICES": "1"}
    assert two.env(None) == {"CUDA_VISIBLE_DEVICES": ""}  # a file-only stage sees no GPU on a GPU run
    assert Devices().env(None) == {}  # a CPU machine: nothing to hide
    assert Devices((), forced_cpu=True).env(None) == {"CUDA_VISIBLE_DEVICES": ""}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # the flow itself was given cards 4 and 6
    assert two.env("cuda:1") == {"CUDA_VISIBLE_DEVICES": "6"}


def test_the_graph_says_which_stages_load_a_model():
    assert {s.name for s in graph.STAGES if not s.device} == {"prepare", "catalog"}


def test_one_model_stage_per_device_and_file_stages_never_wait():
    pool = DevicePool(Devices(("cuda:0", "cuda:1")))
    busy: dict[str, int] = {"cuda:0": 0, "cuda:1": 0}
    worst = {"cuda:0": 0, "cuda:1": 0}
    used, lock, waits = [], threading.Lock(), []
    all_taken, release = threading.Event(), threading.Event()

    def model_stage(hold: threading.Event | None) -> None:
        with pool.lease(True, waits.append) as lease:
            with lock:
                busy[lease.device] += 1
                worst[lease.device] = max(worst[lease.device], busy[lease.device])
                used.append(lease.device)
                if len(used) == 2:
                    all_taken.set()
            assert lease.env == {"CUDA_VISIBLE_DEVICES": lease.device[-1]}
            (hold.wait(10) if hold else time.sleep(0.01))
            with lock:
                busy[lease.device] -= 1

    first = [threading.Thread(target=model_stage, args=(release,)) for _ in range(2)]
    for t in first:
        t.start()
    assert all_taken.wait(10)
    # both cards are busy: a file-only stage still runs at once, on no GPU ...
    with pool.lease(False) as lease:
        assert lease.device == "cpu" and lease.env == {"CUDA_VISIBLE_DEVICES": ""}
    # ... and a model stage waits for a card, saying so
    later = [threading.Thread(target=model_stage, args=(None,)) for _ in range(4)]
    for t in later:
        t.start()
    time.sleep(0.2)
    assert len(used) == 2 and waits
    release.set()
    for t in first + later:
        t.join(10)
    assert len(used) == 6 and set(used) == {"cuda:0", "cuda:1"}
    assert worst == {"cuda:0": 1, "cuda:1": 1}


def test_the_pool_is_shared_by_the_runs_threads():
    d = Devices(("cuda:0",))
    assert devices.pool(d) is devices.pool(Devices(("cuda:0",))) and devices.pool(None) is devices.pool(None)
    assert devices.pool(None).devices == parse_devices("auto")  # a scheduled run names none: every visible GPU


def test_a_stage_process_gets_the_pinning_environment(tmp_path, monkeypatch):
    from steerkit.pipeline.params import load_params

    monkeypatch.setattr(
        run,
        "stage_argv",
        lambda n, params: [sys.executable, "-c", "import os; print('sees', os.environ['CUDA_VISIBLE_DEVICES'])"],
    )
    node = graph.node(load_params("params.yaml"), "catalog")
    lines: list[str] = []
    run.stage_process(node, tmp_path, "params.yaml", 1, lines.append, env={"CUDA_VISIBLE_DEVICES": "3"})
    assert lines == ["catalog | sees 3"]


DRIVER = """
import subprocess, sys, os
child = subprocess.Popen([sys.executable, "-c", "from steerkit.pipeline.launch import die_with_parent; import time; "
                          "die_with_parent(0.1); print('up', flush=True); time.sleep(60)"],
                         env={**os.environ, "STEERKIT_STAGE_PARENT_PID": str(os.getpid())}, stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
import time; time.sleep(60)
"""


def test_a_stage_dies_with_the_process_that_started_it():
    """A Dask worker killed mid-stage takes its stage with it: nothing keeps writing behind a retry."""
    parent = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, 9)
    parent.wait(10)
    deadline = time.time() + 10
    while time.time() < deadline and alive(child):
        time.sleep(0.05)
    assert not alive(child)
