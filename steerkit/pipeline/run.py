"""Running one stage of params.yaml: in this process (``steerkit pipeline stage``), or in its own (the flow).

``run_stage`` loads params.yaml, takes the stage's node from the graph and calls its stage
function directly — no command line in between. While it runs, errors name the params.yaml keys
the user would edit. ``stage_process`` runs the same thing as a child process (what ``dvc repro``
does, and what the flow does for each task) with its output streamed line by line.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import spelled
from ..fileio import sha256_tree
from . import launch
from .devices import Devices, pool
from .dvc import up_to_date
from .graph import Node, StageError, node, spec
from .ledger import Ledger
from .params import DEFAULT_PARAMS, Params, load_params


def params_spelling(stage: str, name: str | None) -> dict[str, str]:
    """How a stage's settings are written in params.yaml (for error messages: ``train.lr``, ...)."""
    if stage == "prepare":
        return {
            "fmt": f"behaviors.{name}.data.format",
            "inputs": f"behaviors.{name}.data.train",
            "test_inputs": f"behaviors.{name}.data.test",
            "mapping": f"behaviors.{name}.data.columns",
        }
    return spec(stage).spelling(name)


def run_stage(
    stage: str,
    name: str | None = None,
    params: str | Path | Params = DEFAULT_PARAMS,
    groups: tuple[str, ...] = (),
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one stage instance from the project root; raise a SteerkitError naming what to fix if it fails."""
    launch.die_with_parent()
    p = params if isinstance(params, Params) else load_params(params)
    n = node(p, stage, name, groups)
    say = echo or print
    say(
        f"{n.address}: "
        + " + ".join(f"steerkit {' '.join(a[:2])} …" for a in n.argv)
        + "  (all command lines: `steerkit pipeline check --commands`)"
    )
    t0 = time.perf_counter()
    with spelled(params_spelling(stage, name), kind="params"):
        n.call.run()
    return {"stage": stage, "name": name, "outputs": list(n.outputs), "seconds": round(time.perf_counter() - t0, 2)}


#: the exit status of a stage that refused its input (a SteerkitError: bad data, a bad parameter)
BAD_INPUT = 2


class StageFailed(StageError):
    """A stage's process ended with a non-zero ``exit_status`` (``BAD_INPUT``: it refused its input)."""

    def __init__(self, exit_status: int, what: str, where: str | None = None, fix: str | None = None) -> None:
        super().__init__(what, where, fix)
        self.exit_status = exit_status

    def __reduce__(self) -> tuple:  # Prefect and Dask ship it between processes whole
        return (type(self), (self.exit_status, self.what, self.where, self.fix))


def worth_retrying(exc: BaseException | None) -> bool:
    """A stage that refused its input fails once (a retry would refuse it again); anything else — a killed
    worker, a lost process, an out-of-memory kill — is retried (Prefect's retry condition)."""
    return not (isinstance(exc, StageFailed) and exc.exit_status == BAD_INPUT)


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn`` for a stage task: :func:`worth_retrying` of the exception it failed with."""
    return worth_retrying(state.result(raise_on_failure=False) if state.is_failed() else None)


def offline_settings(root: str | Path = ".") -> dict[str, str]:
    """The Makefile's Prefect/DVC settings for the project at ``root``.

    Prefect state stays in the project (``.prefect/``), no telemetry (its absence causes
    "database is locked" errors offline), and a patient start for the temporary local API.
    """
    root = Path(root).resolve()
    return {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(root / ".cache" / "dvc-site"),
        "TOKENIZERS_PARALLELISM": "false",
    }


def offline_env(root: str | Path = ".") -> None:
    """:func:`offline_settings` in this process, for runs started without the Makefile (existing values win).

    Must run before prefect is imported.
    """
    for key, value in offline_settings(root).items():
        os.environ.setdefault(key, value)


def stage_argv(n: Node, params: str) -> list[str]:
    """The command dvc.yaml runs for this stage (`steerkit pipeline stage ...`), for this Python."""
    return [
        sys.executable,
        "-m",
        "steerkit.cli",
        "pipeline",
        "stage",
        n.stage,
        *([n.name] if n.name else []),
        "--params",
        params,
    ]


def stage_process(
    n: Node,
    root: str | Path,
    params: str,
    threads: int | None,
    log: Callable[[str], None],
    env: dict[str, str] | None = None,
) -> str:
    """Run one stage in its own process (the command `dvc repro` runs), its output going to ``log`` line by line;
    how the process started: ``forked`` or ``executed``.

    A process per stage keeps stages that run at the same time apart (model loading, RNG seeds,
    torch threads); it is forked from a warm server where it can (``launch``). ``env`` adds to its
    environment (the device it is pinned to). A line every 30 s says the stage is still running while
    it prints nothing.
    """
    env = {**os.environ, **(env or {}), launch.PARENT_PID: str(os.getpid())}
    env.setdefault("COLUMNS", "200")  # command lines and tables on one log line each
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    argv = stage_argv(n, params)
    t0 = time.perf_counter()
    tail: list[str] = []
    proc = launch.start(argv, os.path.abspath(root), env)
    beat = threading.Event()

    def heartbeat() -> None:
        while not beat.wait(30):
            log(f"… {n.address} running for {time.perf_counter() - t0:.0f} s")

    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    log(f"{n.address} | {part.rstrip()}")
                    tail = (tail + [part.rstrip()])[-15:]
        code = proc.wait()
    finally:
        beat.set()
        if proc.poll() is None:
            proc.kill()
    if code != 0:
        raise StageFailed(
            code,
            f"stage {n.address} failed (exit status {code}): "
            + " / ".join(x.strip() for x in tail if x.strip())[-1500:],
            fix=f"run `steerkit pipeline stage {n.stage}{' ' + n.name if n.name else ''}` "
            "in the project root to see it alone",
        )
    return "forked" if isinstance(proc, launch.Forked) else "executed"


def flow_stage(
    n: Node,
    root: str | Path,
    params: str,
    threads: int | None,
    log: Callable[[str], None],
    placement: Devices | None = None,
    run_id: str | None = None,
    recheck: bool = False,
) -> dict[str, Any]:
    """One stage as a flow task runs it: at most once per flow run (``run_id``'s ledger), on a device leased
    from ``placement``'s pool, in its own process. Returns its outputs' hashes and where and when it ran.

    ``recheck`` (planned only because an upstream ran): skipped, as ``dvc repro`` would, when DVC finds its
    inputs unchanged now that the upstream has run (``skipped`` in the result)."""
    ledger = Ledger(root, run_id)
    if (done := ledger.finished(n.address)) is not None:
        log(f"✓ {n.address} already finished in this run (the worker holding its result was lost): not run again")
        return done
    if recheck and up_to_date(root, n.address):
        log(f"= {n.address}: its inputs hash the same after its upstream ran: skipped (as dvc repro would)")
        outputs = {o: sha256_tree(Path(root) / o) for o in n.outputs}
        result = {"stage": n.stage, "name": n.name, "outputs": outputs, "skipped": True}
        ledger.record(n.address, result)
        return result
    with pool(placement).lease(spec(n.stage).device, log) as lease:
        log(f"▶ {n.address} on {lease.device}")
        how = stage_process(n, root, params, threads, log, env=lease.env)
    outputs = {o: sha256_tree(Path(root) / o) for o in n.outputs}
    if missing := [o for o, h in outputs.items() if h is None]:
        raise StageError(f"stage {n.address} did not write {', '.join(missing)}")
    log(f"✓ {n.address} in {lease.seconds:.0f} s")
    result = {"stage": n.stage, "name": n.name, "outputs": outputs, **lease.record(), "process": how}
    ledger.record(n.address, result)
    return result
