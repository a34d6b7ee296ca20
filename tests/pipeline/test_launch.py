"""A stage's process, forked from the warm server or executed fresh: the same output, exit status, environment
and working folder either way, and a forked stage still dies with the process that started it.

(That the two ways compute the same stage outputs is test_flow_dask.py's comparison: the threads run forks its
stages, the cluster's daemonic workers execute them, and their dvc.lock files must agree byte for byte.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from steerkit.pipeline import launch
from steerkit.pipeline.graph import StageError

from .conftest import alive

CHILD = (
    "import os, sys, torch; print('in', os.getcwd(), flush=True); print('sees', os.environ.get('PROBE'), "
    "torch.get_num_threads(), sys.argv[1:]); print('oops', file=sys.stderr); sys.exit(5)"
)


@pytest.mark.parametrize("how", ["fork", "exec"])
def test_both_ways_give_the_same_lines_exit_status_environment_and_folder(how, tmp_path, monkeypatch):
    monkeypatch.setenv(launch.START, how)
    assert launch.forks() == (how == "fork")
    env = {**os.environ, "PROBE": "here", "OMP_NUM_THREADS": "1"}
    env.pop(launch.START)  # the child gets exactly env, whatever this process has
    proc = launch.start([sys.executable, "-c", CHILD, "a", "b"], str(tmp_path), env)
    assert isinstance(proc, launch.Forked) == (how == "fork")
    lines = [line.rstrip("\n") for line in proc.stdout]
    assert proc.wait() == 5
    assert lines == [f"in {tmp_path}", "sees here 1 ['a', 'b']", "oops"]


def test_a_forked_module_runs_as_python_m_runs_it(tmp_path):
    (tmp_path / "probe_mod.py").write_text("import sys\nprint(__name__, sys.argv[1:])\n")  # found in the folder
    proc = launch.start([sys.executable, "-m", "probe_mod", "x"], str(tmp_path), dict(os.environ))
    assert [line.strip() for line in proc.stdout] == ["__main__ ['x']"] and proc.wait() == 0


DRIVER = """
import os, sys
from steerkit.pipeline import launch
code = "from steerkit.pipeline.launch import die_with_parent; import os, time; die_with_parent(0.1); " \\
       "print(os.getpid(), flush=True); time.sleep(60)"
proc = launch.start([sys.executable, "-c", code], os.getcwd(), {**os.environ, launch.PARENT_PID: str(os.getpid())})
print(type(proc).__name__, proc.stdout.readline().strip(), flush=True)
import time; time.sleep(60)
"""


def test_a_forked_stage_dies_with_the_process_that_started_it(tmp_path):
    """The forked stage's parent is the forkserver: it goes when the starting process goes, and the stage too."""
    parent = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    kind, child = parent.stdout.readline().split()
    assert kind == "Forked"
    os.kill(parent.pid, 9)
    parent.wait(10)
    deadline = time.time() + 15
    while time.time() < deadline and alive(int(child)):
        time.sleep(0.05)
    assert not alive(int(child))


def test_a_script_of_ones_own_has_its_stages_executed_unless_it_asks_to_fork(tmp_path):
    """The forked child would import the program's main module first (multiprocessing's rule): an unguarded script
    would start again there. Such a program's stages start fresh instead, and work; a guarded one may ask for
    forks (STEERKIT_STAGE_START=fork)."""
    start = "p = launch.start([sys.executable, '-c', 'print(6 * 7)'], os.getcwd(), dict(os.environ))\n"
    show = "print(type(p).__name__, p.stdout.read().strip(), p.wait())\n"
    head = "import os, sys\nfrom steerkit.pipeline import launch\n"
    (tmp_path / "nightly.py").write_text(head + start + show)
    (tmp_path / "guarded.py").write_text(head + "if __name__ == '__main__':\n    " + start + "    " + show)
    env = {k: v for k, v in os.environ.items() if k != launch.START}
    for script, how, want in (("nightly.py", "auto", "Popen"), ("guarded.py", "fork", "Forked")):
        out = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                             env={**env, launch.START: how})  # fmt: skip
        assert out.stdout.split() == [want, "42", "0"], out.stderr


PROBE_CUDA = """
import torch, torch.cuda as cuda
touched = []
for name in ("is_available", "device_count", "init", "_lazy_init", "current_device", "get_device_properties"):
    setattr(cuda, name, lambda *a, _n=name, **k: touched.append(_n))
from steerkit.pipeline.launch import PRELOAD
for module in PRELOAD:
    __import__(module)
print(touched)
"""


def test_the_warm_server_never_touches_cuda():
    """A child forked after CUDA was initialised cannot use it: importing the server's modules must not ask torch
    anything about CUDA (benchmarks/gpu_check.sh uses CUDA from a forked stage on a lent GPU)."""
    out = subprocess.run([sys.executable, "-c", PROBE_CUDA], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_an_unknown_way_to_start_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(launch.START, "frok")
    with pytest.raises(StageError, match="STEERKIT_STAGE_START='frok'") as err:
        launch.start([sys.executable, "-c", "print(1)"], os.getcwd(), dict(os.environ))
    assert "auto (the default), fork or exec" in err.value.fix
