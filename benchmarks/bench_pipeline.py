"""Benchmark: the main job (the flow of ``make run`` on params.yaml) on each task runner, from fresh clones.

    python benchmarks/bench_pipeline.py [--runners threads dask-processes] [--rev HEAD] [--json]

Each runner gets its own ``git clone`` of ``--rev`` (no DVC state, no Prefect cache: every stage
runs; its own ``steerkit`` package first on ``PYTHONPATH``, so an older revision runs its own code with
this environment's dependencies) and the embedded model from ``$STEERKIT_CACHE``.

* ``threads``: ``steerkit pipeline run`` as ``make run`` runs it (two stages at a time, in threads
  of the flow's process, one core each).
* ``dask-processes``: a Prefect server, a Dask scheduler and two ``dask worker`` processes of one
  thread each (``OMP_NUM_THREADS=1``, as the threads runner gives each stage), started as a
  cluster's nodes would start them, then ``steerkit pipeline run --dask-address``.

The time is the flow command's wall time (Prefect start-up included, setup excluded). With
``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(clone: Path) -> dict[str, str]:
    """The clone's offline Prefect/DVC settings (for the server and workers started here too), its code first."""
    from steerkit.pipeline.run import offline_settings

    env = {**os.environ, **offline_settings(clone)}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(clone),  # the clone's steerkit, not the one installed (editable) in this venv
        STEERKIT_CACHE=env.get("STEERKIT_CACHE", str(REPO / ".cache" / "steerkit")),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        COLUMNS="200",
    )
    return env


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def run_flow(clone: Path, env: dict[str, str], extra: list[str], log: Path) -> tuple[float, str]:
    t = time.perf_counter()
    with log.open("w") as out:
        res = subprocess.run(
            [str(BIN / "steerkit"), "pipeline", "run", *extra], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - t
    lines = log.read_text(errors="replace").splitlines()
    message = next((ln for ln in reversed(lines) if ln.startswith(("done in", "failed"))), lines[-1] if lines else "")
    if res.returncode != 0:
        raise RuntimeError(f"the flow failed ({res.returncode}): {message} (log: {log})")
    return seconds, message


def threads(clone: Path, log: Path) -> tuple[float, str]:
    return run_flow(clone, base_env(clone), [], log)


def dask_processes(clone: Path, log: Path, workers: int = 2) -> tuple[float, str]:
    env = base_env(clone)
    api_port, sched_port = free_port(), free_port()
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{api_port}/api"
    procs = []
    try:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(api_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(server)
        wait_http(f"http://127.0.0.1:{api_port}/api/health")
        address = f"tcp://127.0.0.1:{sched_port}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    "--port",
                    str(sched_port),
                    "--dashboard-address",
                    ":0",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        )
        worker_env = {**env, "OMP_NUM_THREADS": "1"}
        for i in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--nthreads",
                        "1",
                        "--name",
                        f"w{i}",
                        "--no-dashboard",
                    ],
                    cwd=tempfile.gettempdir(),
                    env=worker_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        from distributed import Client

        with Client(address, timeout=120) as client:
            client.wait_for_workers(workers, timeout=180)
        return run_flow(clone, env, ["--dask-address", address], log)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


RUNNERS = {"threads": threads, "dask-processes": dask_processes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    ap.add_argument("--rev", default="HEAD", help="the commit to clone and run")
    ap.add_argument("--keep", action="store_true", help="keep the clones (printed) for a look")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="steerkit-bench-pipeline-"))
    result: dict = {
        "machine": f"{platform.node() or '?'}; {os.cpu_count()} cores; {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
        "rev": subprocess.run(
            ["git", "rev-parse", "--short", args.rev], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
    }
    try:
        for name in args.runners:
            clone = work / name
            subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
            subprocess.run(["git", "checkout", "-q", args.rev], cwd=clone, check=True)
            seconds, message = RUNNERS[name](clone, work / f"{name}.log")
            result[f"{name}_s"] = round(seconds, 1)
            result[f"{name}_summary"] = message
            print(f"{name}: {seconds:.0f} s — {message}", flush=True)
    finally:
        if args.keep:
            print(f"clones kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
