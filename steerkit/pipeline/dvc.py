"""The pipeline's DVC glue: which stages DVC would run, and recording what a flow run made in dvc.lock.

``dvc.yaml`` describes the same graph as ``steerkit.pipeline.graph``; after a flow run,
``dvc commit -f`` of the stages that ran makes ``dvc repro`` find nothing to do (and a
``dvc repro`` leaves the flow nothing to do). Only call ``commit`` after every stage succeeded:
it records whatever is on disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_LOCK = threading.Lock()  # one DVC repository object at a time in this process


@contextmanager
def _quiet() -> Iterator[None]:
    """DVC's INFO lines ("Updating lock file") would repeat once per stage in the run's log."""
    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def stale(root: str | Path) -> tuple[set[str], set[str]] | None:
    """(stages DVC would run, all stages in dvc.yaml): changed ones plus everything downstream; None without DVC."""
    import networkx as nx
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    with _LOCK, _quiet():
        try:
            repo = Repo(str(root))
        except NotDvcRepoError:
            return None
        with repo:
            graph = repo.index.graph
            changed = set(repo.status())
            out: set[str] = set()
            for stage in graph.nodes:
                if stage.addressing in changed:
                    out |= {stage.addressing} | {s.addressing for s in nx.ancestors(graph, stage)}
            known = {s.addressing for s in graph.nodes}
    return out, known


def up_to_date(root: str | Path, address: str, attempts: int = 20) -> bool:
    """Whether DVC finds stage ``address`` up to date now (its deps, params and outs as dvc.lock records them).

    Asked of a stage once its upstream has run: an upstream that rewrote the same bytes leaves it up to date.
    Another process holding the repository's lock (a Dask worker asking at the same moment) is waited for.
    """
    from dvc.lock import LockError
    from dvc.repo import Repo

    for attempt in range(attempts):
        try:
            with _LOCK, _quiet(), Repo(str(root)) as repo:
                return not repo.status(targets=[address])
        except LockError:
            time.sleep(0.5 + 0.1 * attempt)
    return False  # could not ask: run it


def commit(root: str | Path, targets: list[str]) -> None:
    """``dvc commit -f`` of ``targets``: record what is on disk as those stages' outputs in dvc.lock."""
    from dvc.repo import Repo

    with _LOCK, _quiet(), Repo(str(root)) as repo:
        for t in targets:
            repo.commit(t, force=True)
