"""Benchmark: what starting a stage's process costs, forked from the warm server or executed fresh.

    python benchmarks/bench_stage_start.py [--starts 6] [--json]

Each start runs what a model stage does before its own work — import steerkit's training stage and the
Llama modelling code (torch and transformers under them) — through ``steerkit.pipeline.launch.start``, the
way the flow starts a stage, and waits for it to end. ``exec``: a fresh interpreter each time; ``fork``:
from multiprocessing's forkserver, whose one-off start (it imports torch and transformers) is reported apart
from the starts after it. With ``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from steerkit.pipeline import launch

STAGE_IMPORTS = "import steerkit.stages.train, transformers.models.llama.modeling_llama"


def one_start(cwd: str) -> float:
    """Seconds from asking for the process to its exit (status 0 required)."""
    t0 = time.perf_counter()
    proc = launch.start([sys.executable, "-c", STAGE_IMPORTS], cwd, dict(os.environ))
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"the stage's imports failed: {out}")
    return time.perf_counter() - t0


def measure(how: str, starts: int) -> dict:
    os.environ[launch.START] = how  # fork: this script guards its main
    first = one_start(os.getcwd())  # fork: includes starting the server
    rest = [one_start(os.getcwd()) for _ in range(starts)]
    return {"first_s": round(first, 2), "median_s": round(statistics.median(rest), 2), "starts": starts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=6, help="starts measured after the first (default 6)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "exec": measure("exec", args.starts),
        "fork": measure("fork", args.starts),
    }
    result["saved_per_start_s"] = round(result["exec"]["median_s"] - result["fork"]["median_s"], 2)
    for how in ("exec", "fork"):
        r = result[how]
        print(f"{how:5} first {r['first_s']:5.2f} s, then median {r['median_s']:5.2f} s over {r['starts']} starts")
    print(f"saved per stage start: {result['saved_per_start_s']:.2f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
