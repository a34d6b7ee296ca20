"""What a flow run has to do: the graph's stage instances, which of them run, and what keys their cache.

A stage runs when DVC reports it changed (or anything it reads changed), when DVC does not know
it (an optional behavior), or with ``force``. A stage downstream of one that runs is planned too,
but only *rechecked*: once its upstream has run, it runs only if DVC then finds its inputs changed
(an upstream that rewrote the same bytes changes nothing downstream, as under ``dvc repro``). A
task's cache key holds its command lines (its parameters), the hashes of the files it reads that
no running task makes (the code it runs among them), and the results of the tasks it reads from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..fileio import sha256_tree
from ..layout import RELEASES
from . import graph
from .params import Params

#: the order tasks are submitted in (derive needs nothing: first, so it runs beside the chains); from the graph
ORDER = graph.ORDER


@dataclass
class Task:
    """One stage instance in a flow run."""

    node: graph.Node
    run: bool
    upstream: list[graph.Node]  # the running tasks it reads from
    inputs: dict[str, str | None]  # sha256 of what it reads that no running task makes
    recheck: bool = False  # planned only for its upstream: skipped if its inputs hash the same once that ran

    @property
    def refresh(self) -> bool:
        """Its outputs are missing: a cached result would lie, so it runs whatever the cache says."""
        return any(sha256_tree(o) is None for o in self.node.outputs)


def make_plan(
    p: Params,
    groups: tuple[str, ...] = (),
    stale: set[str] | None = None,
    known: set[str] | None = None,
    force: bool = False,
) -> list[Task]:
    """The tasks of a run in ``ORDER`` (the catalog is built after the commit, not planned here).

    ``stale``/``known`` are DVC's view (None: no DVC repository, so everything runs).
    """
    every = [n for n in graph.nodes(p, groups) if n.stage in ORDER]
    every.sort(key=lambda n: ORDER.index(n.stage))
    run: dict[str, bool] = {}
    own: dict[str, bool] = {}
    for n in every:
        own[n.address] = (
            force or stale is None or n.address not in (known or set()) or n.address in stale_only(n, stale, every)
        )
        ups = graph.upstream(n, every)
        run[n.address] = own[n.address] or any(run[u.address] for u in ups)
    tasks = []
    for n in every:
        ups = [u for u in graph.upstream(n, every) if run[u.address]]
        made = {o for u in ups for o in u.outputs}
        reads = [d for d in n.deps if not any(graph.is_within(d, o) or graph.is_within(o, d) for o in made)]
        recheck = run[n.address] and not own[n.address] and known is not None and n.address in known
        tasks.append(Task(n, run[n.address], ups, {d: sha256_tree(d) for d in reads}, recheck))
    return tasks


def stale_only(n: graph.Node, stale: set[str] | None, every: list[graph.Node]) -> set[str]:
    """``stale`` as far as ``n`` is concerned: DVC reports a stage stale when anything upstream is; ``n`` itself
    is stale on its own account only when no stage it reads from is (then its own inputs changed)."""
    if not stale or n.address not in stale:
        return set()
    ups = graph.upstream(n, every)
    return set() if any(u.address in stale for u in ups) else {n.address}


def edited_outputs(results: dict[str, dict]) -> list[str]:
    """Outputs that differ from what their (possibly cached) task recorded: never commit those."""
    return [
        f"{address}: {path}"
        for address, res in results.items()
        for path, sha in res["outputs"].items()
        if sha256_tree(path) != sha
    ]


def catalog_due(force: bool, stale: set[str] | None, anything_ran: bool, catalog: str) -> bool:
    """Rebuild the catalog after a run: if asked, if DVC says so or does not know, after any stage, or if missing."""
    return force or stale is None or "catalog" in stale or anything_ran or not Path(catalog).exists()


def history_state() -> str | None:
    """The release history's hash now (before the catalog stage releases)."""
    return sha256_tree(RELEASES)


def gates_released_by_the_catalog(known: set[str], before: str | None) -> list[str]:
    """The gate stages to re-commit after the catalog stage released what they promoted (none if it released
    nothing: the history still hashes ``before``).

    A gate reads the release history (a rollback must re-gate), and the catalog stage that acts on
    the gate's decision writes it: without this, every release would leave its own gate stale. The
    decision covers the release it caused, so the flow records the new history as the gates' input.
    """
    if history_state() == before:
        return []
    return sorted(a for a in known if a.split("@")[0] == "gate")
