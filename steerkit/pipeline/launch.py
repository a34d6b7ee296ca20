"""How a stage's process starts: forked from a warm server that has imported torch and transformers once, or as
a fresh interpreter (what ``dvc repro`` runs).

Each stage runs in a process of its own, so that stages running at once keep their models, RNG seeds and torch
threads apart and a killed stage takes nothing else with it. A fresh Python pays ~3 s importing torch and
transformers before it does anything: most of a small stage, a minute over a pipeline. Where it can, the flow
starts a stage from multiprocessing's forkserver, which imports those libraries once per flow process; the
child then runs exactly what ``python -m steerkit.cli pipeline stage …`` runs, in the project root, with the
environment that process would get. steerkit itself is never preloaded: every stage imports the project's code
as it is now (code is a stage input, so it must never be served stale). As multiprocessing does, the child
first imports the starting program's main module (the ``steerkit`` command: a guarded script). A long-running
``steerkit pipeline serve`` keeps its server: restart it after upgrading torch or transformers.

A fresh interpreter instead when ``$STEERKIT_STAGE_START`` is ``exec``, where the platform has no forkserver,
when the program is a script of one's own (see ``_main_importable``; ``fork`` forks for it too), and in a
daemonic process (a Dask worker by default; ``DASK_DISTRIBUTED__WORKER__DAEMON=False`` in the workers'
environment lets them fork too), which may not have children of its own. A forked stage shows its command
line in ps, top and nvidia-smi as an executed one would; the run's placement says which way each stage
started.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import shlex
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

import setproctitle

from .graph import StageError

#: how stages start: ``auto`` (forked where that is safe), ``fork`` (forked; a program of one's own must guard its
#: main) or ``exec`` (a fresh interpreter)
START = "STEERKIT_STAGE_START"
#: set for a stage's process: the pid of the process that started it, which it must not outlive
PARENT_PID = "STEERKIT_STAGE_PARENT_PID"
#: imported once by the forkserver (never steerkit): the libraries every model stage imports first
PRELOAD = (
    "torch",
    "transformers.models.llama.modeling_llama",
    "transformers.models.auto.modeling_auto",
    "transformers.tokenization_utils_fast",
    "safetensors.torch",
    "scipy.stats",
    "peft",
)


def die_with_parent(interval_s: float = 1.0) -> None:
    """End this stage's process as soon as the process that started it (``$STEERKIT_STAGE_PARENT_PID``) is gone.

    A Dask worker killed mid-stage must not leave its stage running on, writing the outputs that the retry
    elsewhere writes too. A daemon thread polls the parent pid (any OS). A forked stage's parent is the
    forkserver, which lives on while any of its children does: a forked stage watches a pipe instead.
    """
    parent = os.environ.get(PARENT_PID)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(interval_s)
        os._exit(3)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def forks() -> bool:
    """Whether stages started from this process are forked from the warm server (see the module's docstring):
    ``$STEERKIT_STAGE_START`` ``auto`` (default) where the main module is safe to import again, ``fork`` for any
    program (its main must be guarded, as multiprocessing asks), ``exec`` never."""
    how = os.environ.get(START, "auto")
    if how not in ("auto", "fork", "exec"):
        raise StageError(
            f"cannot tell how to start a stage: {START}={how!r}",
            where=f"${START}",
            fix=f"set it to auto (the default), fork or exec, or unset it: `unset {START}`",
        )
    if how == "exec" or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    return not multiprocessing.current_process().daemon and (how == "fork" or _main_importable())


def _main_importable() -> bool:
    """The forked child first imports this program's main module (multiprocessing's rule), which must not start
    anything then: a package's ``__main__`` (``python -m steerkit.cli``, ``python -m pytest``: never imported
    again), ``python -c`` (nothing to import), a console script pip wrote (``steerkit``: a guarded launcher), or
    a main that multiprocessing already imported this way (this process is its child: a Dask worker). Any other
    program (a script of one's own) has its stages executed instead."""
    main = sys.modules.get("__main__")
    if getattr(main, "__name__", None) == "__mp_main__":
        return True
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name.endswith("__main__")
    path = getattr(main, "__file__", None)
    return path is None or Path(path).resolve().parent == Path(sysconfig.get_path("scripts")).resolve()


class Forked:
    """A Python command line run in a child of the warm forkserver; the parts of ``subprocess.Popen`` a stage
    uses: ``stdout`` (text, stdout and stderr together), ``wait``, ``poll``, ``kill``, ``pid``."""

    def __init__(self, argv: Sequence[str], cwd: str, env: dict[str, str]) -> None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        read, write = ctx.Pipe(duplex=False)
        alive, self._alive = ctx.Pipe(duplex=False)  # held here: the child sees its end close when this process goes
        self._process = ctx.Process(target=_child, args=(list(argv), cwd, dict(env), write, alive), daemon=False)
        self._process.start()
        write.close()  # the child holds its own copies: end of file when it exits
        alive.close()
        self._read = read
        self.pid = self._process.pid
        self.stdout: IO[str] = open(read.fileno(), encoding="utf-8", errors="replace", closefd=False)

    def wait(self) -> int:
        self._process.join()
        for f in (self.stdout, self._read, self._alive):
            f.close()
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()


def start(argv: Sequence[str], cwd: str, env: dict[str, str]) -> subprocess.Popen | Forked:
    """Run ``argv`` (``python -m MODULE …`` or ``python -c CODE …``) in ``cwd`` with exactly ``env``, its output
    readable line by line from ``.stdout``: forked from the warm server when :func:`forks`, else executed."""
    if forks():
        return Forked(argv, cwd, env)
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )


def _child(argv: list[str], cwd: str, env: dict[str, str], out: Connection, alive: Connection) -> None:
    """In the forked child: become ``argv`` as the interpreter would run it (its output into ``out``), and end as
    soon as ``alive``'s other end closes: the process that started it is gone."""

    def watch() -> None:
        try:
            alive.recv_bytes()
        except EOFError:
            pass
        os._exit(3)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    setproctitle.setproctitle(shlex.join(argv))  # ps, top and nvidia-smi show the stage, not the forkserver
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    out.close()
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.environ.pop(PARENT_PID, None)  # its parent is the forkserver, which outlives it: the pipe above watches
    if threads := env.get("OMP_NUM_THREADS"):  # read when torch was imported: too late for the variable alone
        import torch

        torch.set_num_threads(int(threads))
    flag, target, *rest = argv[1:]
    sys.path.insert(0, cwd)  # as `python -m` and `python -c` put the working folder first
    if flag == "-m":
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif flag == "-c":
        sys.argv = ["-c", *rest]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    else:
        raise ValueError(f"cannot fork {argv!r}: only `python -m MODULE …` and `python -c CODE …`")
