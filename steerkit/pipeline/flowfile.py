"""The project's Prefect flow (``flows/pipeline.py``) and its deployment settings (``prefect.yaml``).

The flow file belongs to the project (``prefect.yaml`` names it as the deployment's entrypoint),
not to the installed package, so ``steerkit pipeline run`` loads it from the project root. Only
that file imports Prefect; this module reads files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import SteerkitError

FLOW_FILE = Path("flows") / "pipeline.py"
MODULE = "steerkit_flows_pipeline"


def load_flow(root: str | Path = ".") -> ModuleType:
    """``flows/pipeline.py`` of the project at ``root``, imported once per process."""
    path = (Path(root) / FLOW_FILE).resolve()
    if not path.is_file():
        raise SteerkitError("no flow file", where=str(path), fix="run from the steerkit project root (--root)")
    loaded = sys.modules.get(MODULE)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    _by_value(module)
    return module


def _by_value(module: ModuleType) -> None:
    """Ship the flow file's code to Dask worker processes with its tasks: they cannot import it by name."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - a dependency of prefect and distributed
        return
    cloudpickle.register_pickle_by_value(module)


def deployment_settings(root: str | Path = ".") -> dict[str, Any]:
    """The first deployment of ``prefect.yaml``: name, cron, timezone, parameters, tags, description."""
    import yaml

    path = Path(root) / "prefect.yaml"
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        dep = cfg["deployments"][0]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise SteerkitError(
            f"cannot read the deployment ({type(exc).__name__}: {exc})",
            where=str(path),
            fix="restore prefect.yaml from the steerkit project (`git checkout prefect.yaml`)",
        ) from None
    schedules = dep.get("schedules") or []
    crons = [s["cron"] for s in schedules if s.get("cron")]
    return {
        "name": dep["name"],
        "cron": crons[0] if crons else None,
        "parameters": dep.get("parameters") or {},
        "timezone": next((s.get("timezone") for s in schedules if s.get("timezone")), None),
        "tags": dep.get("tags") or [],
        "description": dep.get("description"),
        "concurrency_limit": _concurrency(dep.get("concurrency_limit"), path),
    }


def _concurrency(raw: Any, path: Path) -> dict[str, Any] | None:
    """prefect.yaml's ``concurrency_limit`` (an integer, or {limit, collision_strategy}), checked, as a mapping."""
    if raw is None:
        return None
    limit = raw.get("limit") if isinstance(raw, dict) else raw
    strategy = raw.get("collision_strategy", "ENQUEUE") if isinstance(raw, dict) else "ENQUEUE"
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1 or strategy not in ("ENQUEUE", "CANCEL_NEW"):
        raise SteerkitError(
            f"concurrency_limit is not a limit: {raw!r}",
            where=f"{path}: deployments[0].concurrency_limit",
            fix="write it like `concurrency_limit: {limit: 1, collision_strategy: CANCEL_NEW}` (or ENQUEUE)",
        )
    return {"limit": limit, "collision_strategy": strategy}
