"""The vector catalog, build side: scan the project's vectors into ``vectors/catalog.json``.

Building scans ``vectors/**/*.safetensors`` under a project root and records, per vector, what it
steers (behavior, method, model, layers), where it is (a posix path relative to the project root),
its sha256, how it scored (the evaluation report's ``summary``) and where its data came from
(the training data's sha256 and DVC version, the git commit). The file is sorted and carries no
build time, so rebuilding an unchanged tree writes identical bytes.

Writers take an exclusive lock (``catalog.json.lock``) around read–merge–write and replace the
file atomically, so processes adding entries at the same time lose none of them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .. import __version__
from ..errors import SteerkitError
from ..fileio import atomic_write_json, sha256_bytes
from ..layout import catalog_path, report_name, report_path
from ..vector import SteeringVector, read_header
from .index import Catalog, CatalogEntry, CatalogError, as_range

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120.0


_AUTO: Any = object()


def make_entry(
    vector_file: str | os.PathLike,
    root: str | os.PathLike = ".",
    *,
    git_rev: str | None = _AUTO,
    dvc_lock: dict | None = None,
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
        data_version=_data_version(lock, _data_relpath(meta.get("data_file"), root)),
        git_rev=git_head(root) if git_rev is _AUTO else git_rev,
        created=created,
        steerkit_version=__version__,
        positions=str(meta.get("positions", "all")),
        format_version=fmt_version,
    )


def vector_files(root: str | os.PathLike = ".") -> list[Path]:
    """Every ``vectors/**/*.safetensors`` (not checkpoints, temporary or hidden files), sorted."""
    base = Path(root) / "vectors"
    if not base.is_dir():
        return []
    return sorted(
        p
        for p in base.rglob("*.safetensors")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
    )


def build_catalog(root: str | os.PathLike = ".") -> Catalog:
    """Scan the project's vectors and return the catalog (nothing is written)."""
    root = Path(root)
    rev, lock = git_head(root), read_dvc_lock(root)
    entries: dict[tuple, CatalogEntry] = {}
    for f in vector_files(root):
        e = make_entry(f, root, git_rev=rev, dvc_lock=lock)
        if e.key in entries:
            raise CatalogError(
                f"two vector files have the same key ({e.describe()}): {entries[e.key].path} and {e.path}",
                where=str(root / "vectors"),
                fix="remove one, or make their metadata (behavior/model/method/layers) differ",
            )
        entries[e.key] = e
    return Catalog(list(entries.values()), root=root, where=str(catalog_path(root)))


def rebuild_catalog(root: str | os.PathLike = ".", path: str | os.PathLike | None = None) -> Catalog:
    """Build and write ``vectors/catalog.json`` (or ``path``) under the lock: the stage function."""
    root = Path(root)
    path = Path(path) if path is not None else catalog_path(root)
    with _locked(path):
        catalog = build_catalog(root)
        atomic_write_json(path, catalog.to_dict())
    catalog.where = str(path)
    return catalog


# ------------------------------------------------------------------------------------------- writing
@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the catalog's exclusive lock (``<catalog>.lock`` beside it)."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise CatalogError(
            f"another process has held the catalog lock for over {LOCK_TIMEOUT_S:.0f} s",
            where=f"{path}.lock",
            fix="wait for the other steerkit process to finish and retry",
        ) from None
    try:
        yield
    finally:
        lock.release()


def write_catalog(catalog: Catalog, path: str | os.PathLike) -> Path:
    """Replace the catalog file with ``catalog`` (locked, atomic)."""
    path = Path(path)
    with _locked(path):
        atomic_write_json(path, catalog.to_dict())
    return path


def update_catalog(path: str | os.PathLike, entries: Iterable[CatalogEntry]) -> Catalog:
    """Add or replace ``entries`` (by behavior, model, method, layers) in the catalog file.

    Lock, re-read, merge, write atomically: concurrent callers adding different entries lose none.
    A missing file starts an empty catalog; an invalid one is an error (not silently replaced).
    """
    path = Path(path)
    with _locked(path):
        current = Catalog.open(path) if path.exists() else Catalog([], where=str(path))
        merged = {e.key: e for e in current.entries}
        merged.update({e.key: e for e in entries})
        catalog = Catalog(list(merged.values()), root=path.parent.parent, where=str(path))
        atomic_write_json(path, catalog.to_dict())
    return catalog


def add_entry(path: str | os.PathLike, entry: CatalogEntry) -> Catalog:
    return update_catalog(path, [entry])


def add_vector(vector_file: str | os.PathLike, root: str | os.PathLike = ".") -> CatalogEntry:
    """Catalog one freshly written vector file in ``root``'s catalog (for a train stage)."""
    entry = make_entry(vector_file, root)
    add_entry(catalog_path(root), entry)
    return entry


# ------------------------------------------------------------------------------------ provenance
def git_head(root: str | os.PathLike = ".") -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``root``, or None (no git, no repo, no commit)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", rev) else None


def read_dvc_lock(root: str | os.PathLike = ".") -> dict:
    """The project's ``dvc.lock`` as a dict ({} when absent; a warning when unreadable)."""
    path = Path(root) / "dvc.lock"
    if not path.is_file():
        return {}
    import yaml

    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        log.warning("%s: cannot read (%s); data versions left empty", path, exc)
        return {}
    return obj if isinstance(obj, dict) else {}


def _data_relpath(data_file: Any, root: Path) -> str | None:
    if not isinstance(data_file, str) or not data_file:
        return None
    p = Path(data_file)
    if p.is_absolute():
        try:
            p = Path(os.path.abspath(p)).relative_to(os.path.abspath(root))
        except ValueError:
            return None
    return PurePosixPath(p.as_posix()).as_posix().removeprefix("./")


def _data_version(lock: dict, data_file: str | None) -> str | None:
    """The md5 DVC recorded for the training data: the file itself, else the nearest folder holding it.

    Stage outputs are preferred to dependencies (both name the same md5 when the lock is current).
    """
    if not data_file or not isinstance(lock.get("stages"), dict):
        return None
    best: tuple[int, int, str] | None = None  # (path distance, outs=0/deps=1, md5)
    target = PurePosixPath(data_file)
    for stage in lock["stages"].values():
        if not isinstance(stage, dict):
            continue
        for kind_rank, kind in ((0, "outs"), (1, "deps")):
            for item in stage.get(kind) or []:
                if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item.get("md5"):
                    continue
                p = PurePosixPath(item["path"].removeprefix("./").rstrip("/"))
                if p == target:
                    dist = 0
                elif p in target.parents:
                    dist = len(target.parts) - len(p.parts)
                else:
                    continue
                cand = (dist, kind_rank, str(item["md5"]))
                best = cand if best is None or cand[:2] < best[:2] else best
    return best[2] if best else None


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
