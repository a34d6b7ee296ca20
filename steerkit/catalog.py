"""The vector catalog: one index of every vector (``vectors/catalog.json``), the place downstream
applications find and load vectors from.

Building scans ``vectors/**/*.safetensors`` under a project root and records, per vector, what it
steers (behavior, method, model, layers), where it is (a posix path relative to the project root),
its sha256, how it scored (the evaluation report's ``summary``) and where its data came from
(the training data's sha256 and DVC version, the git commit). The file is sorted and carries no
build time, so rebuilding an unchanged tree writes identical bytes.

Writers take an exclusive lock (``catalog.json.lock``) around read–merge–write and replace the
file atomically, so processes adding entries at the same time lose none of them.

Reading works on a local project (``Catalog.open(".")``) or on any git/DVC repository at any
revision (``Catalog.open(url, rev="v1.0")``, through ``dvc.api``). Loading verifies the vector's
sha256 against its entry before the bytes are parsed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

from . import __version__
from .errors import ChecksumError, DataError, SteerkitError
from .fileio import atomic_write_json, sha256_bytes
from .layout import model_slug, report_path
from .vector import SteeringVector, _read_header

log = logging.getLogger(__name__)

FORMAT = "steerkit.catalog"
FORMAT_VERSION = 1
CATALOG_RELPATH = "vectors/catalog.json"
LOCK_TIMEOUT_S = 120.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REBUILD_FIX = "rebuild it with `steerkit catalog build` (or restore it with `git checkout`/`dvc pull`)"


class CatalogError(DataError):
    """The catalog file is missing or malformed, or an entry cannot be resolved to a vector."""


class NotInCatalogError(CatalogError, LookupError):
    """No catalog entry matches the query."""


class AmbiguousEntryError(CatalogError, LookupError):
    """Several catalog entries match the query."""


# ----------------------------------------------------------------------------------------- entries
@dataclass
class CatalogEntry:
    """One vector in the catalog. ``path`` is posix, relative to the project root."""

    behavior: str
    method: str
    model: str
    layers: list[int]
    hidden_size: int
    path: str
    sha256: str
    model_fingerprint: str | None = None
    safe_multiplier_range: list[float] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data_sha256: str | None = None
    data_version: str | None = None
    git_rev: str | None = None
    created: str | None = None
    steerkit_version: str | None = None
    format_version: int = 1

    @property
    def key(self) -> tuple[str, str, str, tuple[int, ...]]:
        """Entries are unique by (behavior, model, method, layers); it is also the sort order."""
        return (self.behavior, self.model, self.method, tuple(self.layers))

    def describe(self) -> str:
        return f"behavior={self.behavior} model={self.model} method={self.method} layers={self.layers}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "<catalog>", index: int | None = None) -> "CatalogEntry":
        label = "entry" if index is None else f"entries[{index}]"
        if not isinstance(obj, dict):
            raise CatalogError(f"{label} must be a JSON object, found {type(obj).__name__}", where=where,
                               fix=_REBUILD_FIX)
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        for key in required:
            if key not in obj:
                raise CatalogError(f"{label} lacks the key {key!r}", where=where, fix=_REBUILD_FIX)
        for key in ("behavior", "method", "model", "path", "sha256"):
            if not isinstance(obj[key], str) or not obj[key]:
                raise CatalogError(f"{label}.{key} must be a non-empty string, found {obj[key]!r}", where=where,
                                   fix=_REBUILD_FIX)
        layers = obj["layers"]
        if not isinstance(layers, list) or not layers or not all(_is_int(i) for i in layers):
            raise CatalogError(f"{label}.layers must be a non-empty list of integers, found {layers!r}",
                               where=where, fix=_REBUILD_FIX)
        if not _is_int(obj["hidden_size"]):
            raise CatalogError(f"{label}.hidden_size must be an integer, found {obj['hidden_size']!r}",
                               where=where, fix=_REBUILD_FIX)
        if not _SHA256.match(obj["sha256"]):
            raise CatalogError(f"{label}.sha256 is not a sha256 hex digest: {obj['sha256']!r}", where=where,
                               fix=_REBUILD_FIX)
        metrics = obj.get("metrics", {})
        if metrics is None:
            metrics = {}
        if not isinstance(metrics, dict):
            raise CatalogError(f"{label}.metrics must be a JSON object, found {type(metrics).__name__}",
                               where=where, fix=_REBUILD_FIX)
        rng = obj.get("safe_multiplier_range")
        if rng is not None and _as_range(rng) is None:
            raise CatalogError(f"{label}.safe_multiplier_range must be [low, high] or null, found {rng!r}",
                               where=where, fix=_REBUILD_FIX)
        kwargs = {k: v for k, v in obj.items() if k in known}  # unknown keys: written by a newer minor version
        kwargs.update(layers=[int(i) for i in layers], metrics=metrics, safe_multiplier_range=_as_range(rng))
        return cls(**kwargs)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _as_range(value: Any) -> list[float] | None:
    """``[low, high]`` as floats with low <= high, or None if ``value`` is not such a pair."""
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
            and float(value[0]) <= float(value[1])):
        return [float(value[0]), float(value[1])]
    return None


# ------------------------------------------------------------------------------------- the catalog
@dataclass
class Catalog:
    """Entries plus where they came from: a local project ``root``, or ``repo`` at ``rev``."""

    entries: list[CatalogEntry] = field(default_factory=list)
    root: Path | None = None
    repo: str | None = None
    rev: str | None = None
    where: str = "<catalog>"

    def __post_init__(self) -> None:
        self.entries = sorted(self.entries, key=lambda e: e.key)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    # --- (de)serialising -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                "entries": [e.to_dict() for e in sorted(self.entries, key=lambda e: e.key)]}

    @classmethod
    def from_text(cls, text: str | bytes, where: str = "<catalog>", **kw: Any) -> "Catalog":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", where=where,
                               fix=_REBUILD_FIX) from None
        except UnicodeDecodeError as exc:
            raise CatalogError(f"not UTF-8 text ({exc.reason})", where=where, fix=_REBUILD_FIX) from None
        except (ValueError, RecursionError) as exc:  # an over-long integer, nesting too deep
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
            raise CatalogError(f"not usable JSON ({reason})", where=where, fix=_REBUILD_FIX) from None
        return cls.from_dict(obj, where=where, **kw)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "<catalog>", **kw: Any) -> "Catalog":
        if not isinstance(obj, dict):
            raise CatalogError(f"a catalog must be a JSON object, found {type(obj).__name__}", where=where,
                               fix=_REBUILD_FIX)
        for key in ("format", "format_version", "entries"):
            if key not in obj:
                raise CatalogError(f"the catalog lacks the key {key!r}", where=where, fix=_REBUILD_FIX)
        if obj["format"] != FORMAT:
            raise CatalogError(f"not a steerkit catalog (format={obj['format']!r}, expected {FORMAT!r})",
                               where=where, fix=_REBUILD_FIX)
        version = obj["format_version"]
        if not _is_int(version) or version < 1:
            raise CatalogError(f"bad format_version {version!r}", where=where, fix=_REBUILD_FIX)
        if version > FORMAT_VERSION:
            raise CatalogError(f"catalog format version {version} is newer than this steerkit "
                               f"(reads up to {FORMAT_VERSION})", where=where, fix="upgrade steerkit")
        if not isinstance(obj["entries"], list):
            raise CatalogError(f"'entries' must be a list, found {type(obj['entries']).__name__}", where=where,
                               fix=_REBUILD_FIX)
        entries = [CatalogEntry.from_dict(e, where, i) for i, e in enumerate(obj["entries"])]
        seen: dict[tuple, CatalogEntry] = {}
        for e in entries:
            if e.key in seen:
                raise CatalogError(f"two entries for the same vector key ({e.describe()}): "
                                   f"{seen[e.key].path} and {e.path}", where=where, fix=_REBUILD_FIX)
            seen[e.key] = e
        return cls(entries, where=where, **kw)

    # --- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, source: str | os.PathLike = ".", rev: str | None = None) -> "Catalog":
        """Open a catalog.

        ``source`` is a local project root or the ``catalog.json`` path itself (read from disk), or,
        when ``rev`` is given or ``source`` is a URL, a git/DVC repository whose
        ``vectors/catalog.json`` and vector files are read at ``rev`` through ``dvc.api``.
        """
        text = os.fspath(source)
        if rev is not None or _is_url(text):
            return cls.from_repo(text, rev)
        path = Path(text)
        if path.is_dir():
            path = path / CATALOG_RELPATH
        root = path.parent.parent
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CatalogError("no catalog here", where=str(path),
                               fix="run `steerkit catalog build` in the project root (or `dvc pull "
                                   f"{CATALOG_RELPATH}`), or pass the project root or a repo URL + rev") from None
        except OSError as exc:
            raise CatalogError(f"cannot read the catalog ({exc.strerror or exc})", where=str(path)) from None
        return cls.from_text(data, where=str(path), root=root)

    @classmethod
    def from_repo(cls, repo: str, rev: str | None = None) -> "Catalog":
        """``vectors/catalog.json`` of a git/DVC repository (URL or local path) at ``rev`` (None: default)."""
        where = f"{repo}@{rev or 'HEAD'}:{CATALOG_RELPATH}"
        data = _dvc_read_bytes(CATALOG_RELPATH, repo, rev, where)
        return cls.from_text(data, where=where, repo=repo, rev=rev)

    # --- querying --------------------------------------------------------------------------------
    def behaviors(self) -> list[str]:
        return sorted({e.behavior for e in self.entries})

    def models(self) -> list[str]:
        return sorted({e.model for e in self.entries})

    def find(self, behavior: str, model: str | None = None, method: str | None = "bipo",
             layer: int | None = None) -> CatalogEntry:
        """The one entry for ``behavior`` (and ``model``, ``method``, a ``layer`` it steers).

        ``model`` matches the id recorded in the vector or its folder name (``org/name`` or
        ``org--name``); ``method=None`` accepts any method. Raises ``NotInCatalogError`` (listing what
        exists) or ``AmbiguousEntryError`` (listing the candidates).
        """
        asked = f"behavior={behavior!r}" + (f", model={model!r}" if model else "") + \
                (f", method={method!r}" if method else "") + (f", layer={layer}" if layer is not None else "")
        same_behavior = [e for e in self.entries if e.behavior == behavior]
        if not same_behavior:
            raise NotInCatalogError(
                f"no vector for behavior {behavior!r}; the catalog has "
                + (f"behaviors {', '.join(self.behaviors())} for models {', '.join(self.models())}"
                   if self.entries else "no vectors at all"),
                where=self.where, fix="use one of the listed behaviors (`steerkit catalog ls`), or train the "
                                      "vector and rebuild the catalog")
        hits = [e for e in same_behavior
                if (model is None or _same_model(model, e.model))
                and (method is None or e.method == method)
                and (layer is None or layer in e.layers)]
        if not hits:
            raise NotInCatalogError(
                f"no vector matches {asked}; for {behavior!r} the catalog has: "
                + "; ".join(e.describe() for e in same_behavior),
                where=self.where, fix="pick model/method/layer from the listed entries (`steerkit catalog ls`)")
        if len(hits) > 1:
            raise AmbiguousEntryError(
                f"{len(hits)} vectors match {asked}: " + "; ".join(e.describe() for e in hits),
                where=self.where, fix="narrow it down with model=..., method=... or layer=... "
                                      "(CLI: --model, --method, --layer)")
        return hits[0]

    # --- loading ---------------------------------------------------------------------------------
    def read_bytes(self, entry: CatalogEntry) -> bytes:
        """The vector file's bytes, verified against the entry's sha256."""
        rel = _safe_relpath(entry.path, self.where)
        if self.repo is not None:
            where = f"{self.repo}@{self.rev or 'HEAD'}:{rel}"
            data = _dvc_read_bytes(rel, self.repo, self.rev, where)
        else:
            root = self.root if self.root is not None else Path(".")
            where = str(root / rel)
            try:
                data = (root / rel).read_bytes()
            except FileNotFoundError:
                raise CatalogError("the catalogued vector file is missing", where=where,
                                   fix="fetch it with `dvc pull`, or rebuild the catalog with "
                                       "`steerkit catalog build` if it was removed on purpose") from None
            except OSError as exc:
                raise CatalogError(f"cannot read the vector file ({exc.strerror or exc})", where=where) from None
        actual = sha256_bytes(data)
        if actual != entry.sha256:
            raise ChecksumError(
                f"vector file does not match its catalog entry: expected sha256 {entry.sha256}, got {actual}",
                where=where, fix="if the file was re-trained on purpose, rebuild the catalog "
                                 "(`steerkit catalog build`); otherwise restore it with `dvc pull` / `dvc checkout`")
        return data

    def load(self, entry_or_behavior: CatalogEntry | str, model: str | None = None, method: str | None = "bipo",
             layer: int | None = None) -> SteeringVector:
        """Find (unless given an entry), read, verify the checksum and parse one vector."""
        entry = (entry_or_behavior if isinstance(entry_or_behavior, CatalogEntry)
                 else self.find(entry_or_behavior, model=model, method=method, layer=layer))
        data = self.read_bytes(entry)
        where = f"{self.repo}@{self.rev or 'HEAD'}:{entry.path}" if self.repo is not None else \
            str((self.root or Path(".")) / entry.path)
        return SteeringVector.from_bytes(data, where=where)


def _same_model(query: str, recorded: str) -> bool:
    if query == recorded:
        return True
    try:
        return model_slug(query) == model_slug(recorded)
    except SteerkitError:
        return False


def _is_url(text: str) -> bool:
    return "://" in text or bool(re.match(r"^[\w.-]+@[\w.-]+:", text))


def _safe_relpath(path: str, where: str) -> str:
    """A catalog path must stay inside the project: relative, no '..' parts."""
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path or not p.parts:
        raise CatalogError(f"entry path {path!r} is not a relative path inside the project", where=where,
                           fix=_REBUILD_FIX)
    return p.as_posix()


def _dvc_read_bytes(path: str, repo: str, rev: str | None, where: str) -> bytes:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        import dvc.api
    except ImportError:  # pragma: no cover - dvc is a dependency
        raise CatalogError("reading from a repository needs dvc", where=where, fix="pip install dvc") from None
    try:
        with dvc.api.open(path, repo=repo, rev=rev, mode="rb") as fh:
            return fh.read()
    except Exception as exc:  # noqa: BLE001 - dvc/scmrepo raise many types (missing path, bad rev, no remote)
        raise CatalogError(f"cannot read {path} from the repository ({type(exc).__name__}: {exc})", where=where,
                           fix="check the repository URL and revision; DVC-tracked files also need a "
                               "reachable DVC remote") from None


# ------------------------------------------------------------------------------------------ building
def catalog_path(root: str | os.PathLike = ".") -> Path:
    return Path(root) / CATALOG_RELPATH


_AUTO: Any = object()


def make_entry(vector_file: str | os.PathLike, root: str | os.PathLike = ".", *,
               git_rev: str | None = _AUTO, dvc_lock: dict | None = None) -> CatalogEntry:
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
        raise CatalogError("vector file is not inside the project root", where=str(path),
                           fix=f"keep vectors under {root / 'vectors'}") from None
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
        raise CatalogError(f"the vector names no {' or '.join(missing)} in its metadata and its path does not "
                           "follow vectors/<model>/<behavior>/L<layer>.safetensors", where=str(path),
                           fix="save it at its layout path or set the metadata keys")
    rng = meta.get("safe_multipliers")
    safe = _as_range(rng) if rng is not None else None
    if rng is not None and safe is None:
        log.warning("%s: ignoring meta safe_multipliers %r (expected [low, high])", path, rng)
    try:
        fmt_version = int(_read_header(data).get("format_version", "1"))
    except ValueError:  # pragma: no cover - from_bytes already refused it
        fmt_version = 1
    created = meta.get("created") if isinstance(meta.get("created"), str) else \
        datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    lock = dvc_lock if dvc_lock is not None else read_dvc_lock(root)
    return CatalogEntry(
        behavior=str(behavior), method=str(method), model=str(model), layers=vec.layer_ids,
        hidden_size=vec.hidden_size, path=rel, sha256=sha256_bytes(data),
        model_fingerprint=meta.get("model_fingerprint"), safe_multiplier_range=safe,
        metrics=_eval_summary(root, str(model), str(behavior), str(method), vec.layer_ids),
        data_sha256=meta.get("data_sha256"),
        data_version=_data_version(lock, _data_relpath(meta.get("data_file"), root)),
        git_rev=git_head(root) if git_rev is _AUTO else git_rev,
        created=created, steerkit_version=__version__, format_version=fmt_version)


def vector_files(root: str | os.PathLike = ".") -> list[Path]:
    """Every ``vectors/**/*.safetensors`` (not checkpoints, temporary or hidden files), sorted."""
    base = Path(root) / "vectors"
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*.safetensors")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts))


def build_catalog(root: str | os.PathLike = ".") -> Catalog:
    """Scan the project's vectors and return the catalog (nothing is written)."""
    root = Path(root)
    rev, lock = git_head(root), read_dvc_lock(root)
    entries: dict[tuple, CatalogEntry] = {}
    for f in vector_files(root):
        e = make_entry(f, root, git_rev=rev, dvc_lock=lock)
        if e.key in entries:
            raise CatalogError(f"two vector files have the same key ({e.describe()}): "
                               f"{entries[e.key].path} and {e.path}", where=str(root / "vectors"),
                               fix="remove one, or make their metadata (behavior/model/method/layers) differ")
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
        raise CatalogError(f"another process has held the catalog lock for over {LOCK_TIMEOUT_S:.0f} s",
                           where=f"{path}.lock", fix="wait for the other steerkit process to finish and retry") from None
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
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
                             capture_output=True, text=True, timeout=30)
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
    name = behavior if method == "bipo" else f"{behavior}.{method}"
    try:
        path = report_path(root, "eval", model, name)
    except SteerkitError:
        return {}
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read the evaluation report ({exc})", where=str(path),
                           fix="re-run `steerkit evaluate` for this vector, or delete the broken report") from None
    if not isinstance(report, dict) or not isinstance(report.get("summary"), dict):
        raise CatalogError("the evaluation report has no 'summary' object", where=str(path),
                           fix="re-run `steerkit evaluate` for this vector")
    evaluated = (report.get("vector") or {}).get("layers") if isinstance(report.get("vector"), dict) else None
    if isinstance(evaluated, list) and sorted(evaluated) != sorted(layers):
        return {}  # the report is for another layer's vector of the same behavior
    return report["summary"]
