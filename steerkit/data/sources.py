"""Registry of public datasets (``data/sources.yaml``) and checksum-verified fetching.

A file is fetched from a local mirror folder when one is given or set in the environment
variable ``STEERKIT_DATA_MIRROR`` (a folder laid out like the registry's ``path`` values, e.g.
``shared/datasets``), otherwise downloaded from its pinned URL. Every file is checked against
its registered sha256 *before* it appears at its destination, so ``data/raw/`` only ever holds
complete, verified files.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import ChecksumError, DataError, StorageError
from ..fileio import sha256_file, storage_error

MIRROR_ENV = "STEERKIT_DATA_MIRROR"
"""Environment variable naming a local folder that mirrors the registry paths (no network needed)."""

REGISTRY_PATH = "data/sources.yaml"
RAW_DIR = "data/raw"
SOURCE_FORMATS = ("bipo-csv", "anthropic-jsonl", "truthfulqa-csv", "truthfulqa-mc-json", "advbench-csv")
URL_SCHEMES = ("https://", "file://")
DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20

_REQUIRED: dict[str, type] = {
    "path": str,
    "url": str,
    "sha256": str,
    "license": str,
    "format": str,
}
_OPTIONAL: dict[str, type] = {"behavior": str, "rows": int}
_TOP_KEYS = {"version", "sources", "groups"}
_KIND = {str: "a string", int: "an integer"}


@dataclass(frozen=True)
class Source:
    """One registered file: where it lives (``path``), where it comes from and what it must hash to."""

    name: str
    path: str
    url: str
    sha256: str
    license: str
    format: str
    behavior: str | None = None
    rows: int | None = None


# --------------------------------------------------------------------------- registry


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # e.g. `{[a]: b}`; SafeLoader says the same, but only after our `in` check below
            raise yaml.constructor.ConstructorError(
                None, None, f"found unhashable key {key!r}", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_entry(name: str, entry: Any, where: str) -> Source:
    here = f"{where}: sources.{name}"
    if not isinstance(entry, dict):
        raise DataError(
            f"entry must be a mapping of keys, got {_type_name(entry)}",
            here,
            f"give it the keys {', '.join(_REQUIRED)} (and optionally {', '.join(_OPTIONAL)})",
        )
    allowed = {**_REQUIRED, **_OPTIONAL}
    for key in entry:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DataError(
                f"unknown key '{key}'",
                here,
                f"{hint}allowed keys: {', '.join(allowed)}",
            )
    for key in _REQUIRED:
        if key not in entry:
            raise DataError(
                f"missing key '{key}'",
                here,
                f"add '{key}:' to the entry (see the schema comment at the top of the file)",
            )
    for key, kind in allowed.items():
        value = entry.get(key)
        if key in _OPTIONAL and value is None:
            continue
        # bool is a subclass of int; 'rows: true' is a mistake, not a count.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(
                f"key '{key}' must be {_KIND[kind]}, got {_type_name(value)} ({value!r})",
                f"{here}.{key}",
                f"write '{key}' as {_KIND[kind]}"
                + (" (quote it if YAML reads it as a number or date)" if kind is str else ""),
            )
        if kind is str and not value.strip():
            raise DataError(f"key '{key}' is empty", f"{here}.{key}", f"give '{key}' a value")

    path = PurePosixPath(entry["path"])
    if path.is_absolute() or ".." in path.parts or "\\" in entry["path"]:
        raise DataError(
            f"path '{entry['path']}' must be relative, with '/' separators and no '..'",
            f"{here}.path",
            "write it relative to the mirror folder, e.g. bipo/power-seeking/train.csv",
        )
    sha = entry["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise DataError(
            f"sha256 '{sha}' is not 64 lowercase hex digits",
            f"{here}.sha256",
            "paste the first field of `sha256sum <file>`",
        )
    if not entry["url"].startswith(URL_SCHEMES):
        raise DataError(
            f"url '{entry['url']}' must start with one of {', '.join(URL_SCHEMES)}",
            f"{here}.url",
            "use a raw.githubusercontent.com URL pinned to a commit",
        )
    if entry["format"] not in SOURCE_FORMATS:
        raise DataError(
            f"unknown format '{entry['format']}'",
            f"{here}.format",
            f"use one of {', '.join(SOURCE_FORMATS)}",
        )
    if entry.get("rows") is not None and entry["rows"] < 0:
        raise DataError(f"rows must be >= 0, got {entry['rows']}", f"{here}.rows", "give the number of data rows")
    return Source(name=str(name), **{k: entry.get(k) for k in allowed})


def _check_groups(raw: Any, sources: dict[str, Source], where: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(
            f"'groups' must be a mapping of group name to a list of source names, got {_type_name(raw)}",
            f"{where}: groups",
            "write groups as `name: [source, ...]`",
        )
    groups: dict[str, tuple[str, ...]] = {}
    for gname, members in raw.items():
        here = f"{where}: groups.{gname}"
        if gname in sources:
            raise DataError(f"group name '{gname}' is also a source name", here, "rename the group")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise DataError(
                f"group must be a list of source names, got {_type_name(members)}",
                here,
                "write it as a YAML list of source names",
            )
        for m in members:
            if m not in sources:
                close = difflib.get_close_matches(m, sources, n=3)
                raise DataError(
                    f"unknown source '{m}' in group",
                    here,
                    f"did you mean {', '.join(close)}?" if close else "add the source under 'sources:' first",
                )
        groups[str(gname)] = tuple(members)
    return groups


def load_sources(path: str | os.PathLike = REGISTRY_PATH) -> tuple[dict[str, Source], dict[str, tuple[str, ...]]]:
    """Read and validate a registry file; return ``(sources by name, groups by name)``."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(
            f"cannot read source registry: {exc.strerror or exc}",
            where,
            "run from the repository root or pass the path to data/sources.yaml",
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at byte offset {exc.start}",
            where,
            "save the registry as UTF-8",
        ) from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise DataError(f"not valid YAML: {exc}", where, "fix the YAML syntax") from exc
    except RecursionError:
        raise DataError("not usable YAML: nested too deeply", where, "fix the YAML syntax") from None
    if not isinstance(doc, dict):
        raise DataError(
            f"registry must be a mapping with 'version' and 'sources', got {_type_name(doc)}",
            where,
            "see the schema comment at the top of data/sources.yaml",
        )
    for key in doc:
        if key not in _TOP_KEYS:
            raise DataError(f"unknown top-level key '{key}'", where, f"allowed: {', '.join(sorted(_TOP_KEYS))}")
    if doc.get("version") != 1:
        raise DataError(f"unsupported registry version {doc.get('version')!r}", f"{where}: version", "set 'version: 1'")
    raw_sources = doc.get("sources")
    if not isinstance(raw_sources, dict) or not raw_sources:
        raise DataError(
            "'sources' must be a non-empty mapping of name to entry",
            f"{where}: sources",
            "add at least one entry under 'sources:'",
        )
    sources = {str(name): _check_entry(str(name), entry, where) for name, entry in raw_sources.items()}
    by_path: dict[str, str] = {}
    for s in sources.values():
        if s.path in by_path:
            raise DataError(
                f"path '{s.path}' is registered twice (also by '{by_path[s.path]}')",
                f"{where}: sources.{s.name}.path",
                "give each file one entry",
            )
        by_path[s.path] = s.name
    return sources, _check_groups(doc.get("groups"), sources, where)


def load_registry(path: str | os.PathLike = REGISTRY_PATH) -> dict[str, Source]:
    """Registered sources by name, validated (see ``load_sources``)."""
    return load_sources(path)[0]


def load_groups(path: str | os.PathLike = REGISTRY_PATH) -> dict[str, tuple[str, ...]]:
    """Named groups of sources from the registry, validated against its sources."""
    return load_sources(path)[1]


def resolve(
    names: str | Iterable[str],
    registry: dict[str, Source],
    groups: dict[str, Iterable[str]] | None = None,
) -> list[Source]:
    """Sources for ``names`` (source or group names), groups expanded, first occurrence kept."""
    groups = groups or {}
    if isinstance(names, str):
        names = [names]
    out: dict[str, Source] = {}
    for name in names:
        if name in registry:
            members: Iterable[str] = [name]
        elif name in groups:
            members = groups[name]
        else:
            known = sorted(registry) + sorted(groups)
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise DataError(
                f"unknown source or group '{name}'",
                name,
                f"{hint}groups: {', '.join(sorted(groups)) or '(none)'}; sources: {', '.join(sorted(registry))}",
            )
        for m in members:
            if m not in registry:
                raise DataError(f"group '{name}' names unknown source '{m}'", None, "fix the group in the registry")
            out.setdefault(m, registry[m])
    return list(out.values())


# --------------------------------------------------------------------------- fetching


def mirror_dir() -> Path | None:
    """The folder named by ``$STEERKIT_DATA_MIRROR``, or None when unset or empty."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(
            f"{MIRROR_ENV} is set to '{value}', which is not a folder",
            MIRROR_ENV,
            f"point {MIRROR_ENV} at a folder laid out like data/sources.yaml paths (e.g. shared/datasets), "
            "or unset it to download",
        )
    return path


def _file_chunks(path: Path) -> Iterator[bytes]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(
            f"cannot read mirror file: {exc.strerror or exc}",
            str(path),
            f"check that the mirror folder holds this file, or unset {MIRROR_ENV} to download it",
        ) from exc
    with fh:
        while True:
            try:
                chunk = fh.read(_CHUNK)
            except OSError as exc:  # a read error is the mirror's fault, not the destination's
                raise DataError(
                    f"cannot read mirror file: {exc.strerror or exc}",
                    str(path),
                    "check the mirror folder's disk, or unset the mirror to download",
                ) from exc
            if not chunk:
                return
            yield chunk


def _url_chunks(url: str) -> Iterator[bytes]:
    """Stream ``url``; any network failure becomes a DataError (errors while *writing* pass through)."""
    fix = f"check the network, or set {MIRROR_ENV} to a local folder holding the files (e.g. shared/datasets)"
    try:
        resp = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise DataError(f"download failed: {getattr(exc, 'reason', None) or exc}", url, fix) from exc
    with resp:
        while True:
            try:
                chunk = resp.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DataError(f"download interrupted: {exc!r}", url, fix) from exc
            if not chunk:
                return
            yield chunk


def _write_verified(dest: Path, chunks: Iterable[bytes], expected: str, origin: str) -> Path:
    """Write ``chunks`` to a temp file beside ``dest``; move it into place only if its sha256 is ``expected``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise storage_error(exc, dest) from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumError(
                f"checksum mismatch for {dest.name}: expected sha256 {expected}, got {actual}",
                origin,
                "the origin holds a different file than the one registered; fix the mirror copy "
                "or, if upstream really changed, re-check the file and update sha256 in data/sources.yaml",
            )
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):  # writing failed (disk full, ...)
            raise storage_error(exc, dest) from exc
        raise
    return dest


def fetch(
    source: Source,
    dest_root: str | os.PathLike = RAW_DIR,
    mirror: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Put ``source`` at ``dest_root/source.path``, verified; no work if it is already there and correct.

    Copies from ``mirror`` (default: ``$STEERKIT_DATA_MIRROR``) when set, else downloads ``source.url``.
    ``force`` refetches even a correct file (it is replaced only by a verified copy).
    """
    dest = Path(dest_root) / source.path
    if not force and dest.is_file() and sha256_file(dest) == source.sha256:
        return dest
    mirror_path = Path(mirror).expanduser() if mirror is not None else mirror_dir()
    if mirror_path is not None:
        if not mirror_path.is_dir():
            raise DataError(
                f"mirror '{mirror_path}' is not a folder",
                source.name,
                f"pass an existing folder or set {MIRROR_ENV} to one",
            )
        origin = mirror_path / source.path
        return _write_verified(dest, _file_chunks(origin), source.sha256, str(origin))
    return _write_verified(dest, _url_chunks(source.url), source.sha256, source.url)


def fetch_many(
    names: str | Iterable[str],
    dest_root: str | os.PathLike = RAW_DIR,
    mirror: str | os.PathLike | None = None,
    force: bool = False,
    registry_path: str | os.PathLike = REGISTRY_PATH,
) -> list[Path]:
    """Fetch every source named (source or group names) from the registry at ``registry_path``."""
    registry, groups = load_sources(registry_path)
    selected = resolve(names, registry, groups)
    if mirror is None:
        mirror = mirror_dir()
    return [fetch(s, dest_root=dest_root, mirror=mirror, force=force) for s in selected]
