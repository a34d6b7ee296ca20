"""What each stage of one flow run finished with, kept in the project so no stage runs twice in a run.

Dask keeps a task's result on the worker that computed it; when that worker dies, the scheduler
runs the task again to get the result back, even though the stage already wrote its outputs. A
stage that reads the ledger first sees that it finished in this flow run and, if its outputs are
still the ones it wrote, returns what it returned then instead of training (or deriving) again.
The ledger lives under ``.cache/pipeline-runs/<flow run id>/`` (on the shared folder of a cluster)
and is removed when the flow run ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_json, sha256_tree

RUNS = Path(".cache") / "pipeline-runs"


class Ledger:
    """The finished stages of one flow run (``run_id``) of the project at ``root``."""

    def __init__(self, root: str | Path, run_id: str | None) -> None:
        self.root = Path(root)
        self.folder = self.root / RUNS / str(run_id) if run_id else None

    def _path(self, address: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{address.replace('@', '.')}.json"

    def finished(self, address: str) -> dict[str, Any] | None:
        """The result the stage returned earlier in this run, if its outputs are still what it wrote."""
        if self.folder is None or not self._path(address).is_file():
            return None
        try:
            result = json.loads(self._path(address).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        outputs = result.get("outputs") or {}
        return result if all(sha256_tree(self.root / o) == h for o, h in outputs.items()) else None

    def record(self, address: str, result: dict[str, Any]) -> None:
        if self.folder is not None:
            atomic_write_json(self._path(address), result)

    def close(self) -> None:
        """Forget the run (when it ended, however it ended)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
