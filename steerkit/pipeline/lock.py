"""One pipeline run per project at a time: a cron run overlapping a person's ``make run`` is refused, not interleaved.

Two flow runs on one project would race on the same stage outputs, ``dvc.lock`` and the catalog. The
flow holds an exclusive lock (``.pipeline.lock`` in the project root, an OS file lock, so a killed run
releases it with its process) for its whole run; a second run waits up to
``$STEERKIT_PIPELINE_WAIT_S`` seconds (default 0) and then stops with a message naming the run that
holds the project (its host, process, user and start time, from ``.pipeline.lock.json``).
"""

from __future__ import annotations

import functools
import getpass
import inspect
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..errors import SteerkitError
from ..fileio import exclusive

PROJECT = ".pipeline"  # fileio.exclusive holds <PROJECT>.lock
LOCK, HOLDER = f"{PROJECT}.lock", f"{PROJECT}.lock.json"  # the OS lock; who holds it
F = TypeVar("F", bound=Callable[..., Any])


class ProjectBusyError(SteerkitError, RuntimeError):
    """Another pipeline run holds the project."""


def _holder(root: Path) -> str:
    try:
        h = json.loads((root / HOLDER).read_text(encoding="utf-8"))
        return f"pid {h['pid']} on {h['host']} (user {h['user']}), started {h['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def project_lock(root: str | os.PathLike, wait_s: float | None = None) -> Iterator[None]:
    """Hold the project's pipeline lock (wait up to ``wait_s``, default ``$STEERKIT_PIPELINE_WAIT_S`` or 0)."""
    root = Path(root)
    wait = float(os.environ.get("STEERKIT_PIPELINE_WAIT_S", "0")) if wait_s is None else wait_s
    busy = lambda: ProjectBusyError(
        f"another pipeline run holds this project: {_holder(root)}",
        where=str(root / LOCK),
        fix="wait for it to finish (or stop it), then run again; set STEERKIT_PIPELINE_WAIT_S=SECONDS to wait",
    )
    with exclusive(root / PROJECT, wait, busy):
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "user": getpass.getuser(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (root / HOLDER).write_text(json.dumps(info), encoding="utf-8")
        try:
            yield
        finally:
            (root / HOLDER).unlink(missing_ok=True)


def holds_project_lock(fn: F) -> F:
    """Run ``fn`` (which takes the project ``root``) holding that project's pipeline lock."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        with project_lock(Path(bound.arguments["root"]).resolve()):
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]
