"""The vector catalog, build side: scan the project's vectors into ``vectors/catalog.json``.

Building scans ``vectors/**/*.safetensors`` under a project root and records, per vector, what it
steers (behavior, method, model, layers), where it is (a posix path relative to the project root),
its sha256, how it scored (the evaluation report's ``summary``) and where its data came from
(the training data's sha256 and DVC version, the git commit). The file is sorted and carries no
build time, so rebuilding an unchanged tree writes identical bytes.

The writer (``rebuild_catalog``, the catalog stage) takes an exclusive lock (``catalog.json.lock``)
around scan-and-write and replaces the file atomically: a reader never sees half a catalog, and two
rebuilds at once write one after the other.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .. import __version__
from ..errors import SteerkitError
from ..fileio import atomic_write_json, exclusive, sha256_bytes
from ..layout import catalog_path, released_dir, report_name, report_path
from ..vector import SteeringVector, read_header
from . import schemas
from .index import Catalog, CatalogEntry, CatalogError, as_range
from .provenance import dvc_version, git_head, read_dvc_lock, relpath_in
from .releases import History

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120.0


_AUTO: Any = object()


def make_entry(
    vector_file: str | os.PathLike,
    root: str | os.PathLike = ".",
    *,
    git_rev: str | None = _AUTO,
    dvc_lock: dict | None = None,
    channel: str = "candidate",
    version: int | None = None,
) -> CatalogEntry:
    """The catalog entry for one vector file under ``root`` (raises on an invalid vector file).

    ``git_rev`` and ``dvc_lock`` default to the project's current ones; ``build_catalog`` passes
    them in once for all files.
    """
    root = Path(root)
    path = Path(vector_file)
    try:
        # abspath, not resolve: a DVC symlink/hardlink cache must not move the file out of the project
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        raise CatalogError(
            "vector file is not inside the project root", where=str(path), fix=f"keep vectors under {root / 'vectors'}"
        ) from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read the vector file ({exc.strerror or exc})", where=str(path)) from None
    vec = SteeringVector.from_bytes(data, where=str(path))  # a corrupt file in the store is an error
    meta = vec.meta
    parts = PurePosixPath(rel).parts  # vectors/<model>/<behavior>/L<layer>[.<method>].safetensors
    name_parts = path.name[: -len(".safetensors")].split(".")
    behavior = meta.get("behavior") or (parts[-2] if len(parts) >= 4 else None)
    model = meta.get("model") or (parts[-3] if len(parts) >= 4 else None)
    method = meta.get("method") or (name_parts[1] if len(name_parts) > 1 else "bipo")
    missing = [k for k, v in (("behavior", behavior), ("model", model)) if not v]
    if missing:
        raise CatalogError(
            f"the vector names no {' or '.join(missing)} in its metadata and its path does not "
            "follow vectors/<model>/<behavior>/L<layer>.safetensors",
            where=str(path),
            fix="save it at its layout path or set the metadata keys",
        )
    rng = meta.get("safe_multipliers")
    safe = as_range(rng) if rng is not None else None
    if rng is not None and safe is None:
        log.warning("%s: ignoring meta safe_multipliers %r (expected [low, high])", path, rng)
    try:
        fmt_version = int(read_header(data).get("format_version", "1"))
    except ValueError:  # pragma: no cover - from_bytes already refused it
        fmt_version = 1
    created = (
        meta.get("created")
        if isinstance(meta.get("created"), str)
        else datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    )
    lock = dvc_lock if dvc_lock is not None else read_dvc_lock(root)
    return CatalogEntry(
        behavior=str(behavior),
        method=str(method),
        model=str(model),
        layers=vec.layer_ids,
        hidden_size=vec.hidden_size,
        path=rel,
        sha256=sha256_bytes(data),
        model_fingerprint=meta.get("model_fingerprint"),
        safe_multiplier_range=safe,
        metrics=_eval_summary(root, str(model), str(behavior), str(method), vec.layer_ids),
        data_sha256=meta.get("data_sha256"),
        data_version=dvc_version(lock, relpath_in(meta.get("data_file"), root)),
        git_rev=git_head(root) if git_rev is _AUTO else git_rev,
        created=created,
        steerkit_version=__version__,
        positions=str(meta.get("positions", "all")),
        format_version=fmt_version,
        channel=channel,
        version=version,
        generated=meta.get("generated") if isinstance(meta.get("generated"), dict) else None,
    )


def vector_files(root: str | os.PathLike = ".") -> list[Path]:
    """Every candidate ``vectors/**/*.safetensors`` (not released copies, checkpoints, temporary or hidden files)."""
    base = Path(root) / "vectors"
    if not base.is_dir():
        return []
    released = released_dir(root)
    return sorted(
        p
        for p in base.rglob("*.safetensors")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(base).parts)
        and released not in p.parents
    )


def build_catalog(root: str | os.PathLike = ".") -> Catalog:
    """Scan the project's vectors (the candidates) and its releases (the stable ones); nothing is written."""
    root = Path(root)
    rev, lock, history = git_head(root), read_dvc_lock(root), History.load(root)
    entries: dict[tuple, CatalogEntry] = {}

    def add(e: CatalogEntry) -> None:
        if e.key in entries:
            raise CatalogError(
                f"two vector files have the same key ({e.describe()}): {entries[e.key].path} and {e.path}",
                where=str(root / "vectors"),
                fix="remove one, or make their metadata (behavior/model/method/layers) differ",
            )
        entries[e.key] = e

    released = {(e.key, e.sha256): e.version for e in history.events if e.event == "promote"}
    for f in vector_files(root):
        e = make_entry(f, root, git_rev=rev, dvc_lock=lock)
        e.version = released.get(((e.behavior, e.model, e.method), e.sha256))
        add(e)
    for key in history.keys():
        stable = history.stable(*key)
        e = make_entry(
            root / stable.path, root, git_rev=stable.git_rev, dvc_lock={}, channel="stable", version=stable.version
        )
        metrics = stable.metrics
        e.metrics = metrics.get("summary", {})
        e.off_target = metrics.get("off_target", {})
        e.dose_response = metrics.get("dose_response")
        e.safe_multiplier_range = as_range(metrics.get("safe_range")) or e.safe_multiplier_range
        e.data_version, e.released = stable.dvc_md5, stable.when
        add(e)
    return Catalog(list(entries.values()), root=root, where=str(catalog_path(root)))


def rebuild_catalog(root: str | os.PathLike = ".", path: str | os.PathLike | None = None) -> Catalog:
    """Build and write ``vectors/catalog.json`` (or ``path``) under the lock: the stage function."""
    root = Path(root)
    path = Path(path) if path is not None else catalog_path(root)
    with _locked(path):
        catalog = build_catalog(root)
        written = catalog.to_dict()
        for i, entry in enumerate(written["entries"]):  # what applications read keeps to its published schema
            schemas.validate("catalog-entry", entry, f"{path}: entries[{i}]")
        atomic_write_json(path, written)
    catalog.where = str(path)
    return catalog


# ------------------------------------------------------------------------------------------- writing
def _locked(path: Path) -> AbstractContextManager:
    """Hold the catalog's exclusive lock (``<catalog>.lock`` beside it)."""
    return exclusive(
        path,
        LOCK_TIMEOUT_S,
        lambda: CatalogError(
            f"another process has held the catalog lock for over {LOCK_TIMEOUT_S:.0f} s",
            where=f"{path}.lock",
            fix="wait for the other steerkit process to finish and retry",
        ),
    )


def _eval_summary(root: Path, model: str, behavior: str, method: str, layers: list[int]) -> dict[str, Any]:
    """The evaluation report's ``summary`` for this vector, or {} (no report, or one for other layers)."""
    try:
        path = report_path(root, "eval", model, report_name(behavior, method))
    except SteerkitError:
        return {}
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(
            f"cannot read the evaluation report ({exc})",
            where=str(path),
            fix="re-run `steerkit evaluate` for this vector, or delete the broken report",
        ) from None
    if not isinstance(report, dict) or not isinstance(report.get("summary"), dict):
        raise CatalogError(
            "the evaluation report has no 'summary' object",
            where=str(path),
            fix="re-run `steerkit evaluate` for this vector",
        )
    evaluated = (report.get("vector") or {}).get("layers") if isinstance(report.get("vector"), dict) else None
    if isinstance(evaluated, list) and sorted(evaluated) != sorted(layers):
        return {}  # the report is for another layer's vector of the same behavior
    return report["summary"]
