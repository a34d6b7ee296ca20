"""The vector catalog, read side: one index of every vector (``vectors/catalog.json``), the place
downstream applications find and load vectors from (``build`` writes it).

An entry says what a vector steers (behavior, method, model, layers), where its file is (posix,
relative to the project root), its sha256, how it scored and where its data came from. Reading
works on a local project (``Catalog.open(".")``) or on any git/DVC repository at any revision
(``Catalog.open(url, rev="v1.0")``, through ``dvc.api``). Loading verifies the vector's sha256
against its entry before the bytes are parsed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..errors import ChecksumError, DataError, SteerkitError, option, setting
from ..fileio import sha256_bytes
from ..layout import CATALOG, model_slug
from ..vector import SteeringVector
from .remote import read_at

FORMAT = "steerkit.catalog"
FORMAT_VERSION = 2  # 2: entries have a channel (candidate, stable) and a version
CHANNELS = ("candidate", "stable")
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
    positions: str = "all"  # where the vector is meant to be added: all, prompt or generated
    channel: Literal["candidate", "stable"] | None = None  # candidate (the pipeline's latest) or stable; None: 0.1
    version: int | None = None  # the release number (a candidate that was never released has none)
    off_target: dict[str, Any] = field(default_factory=dict)  # its swing on other behaviors' held-out pairs
    dose_response: list[dict[str, Any]] | None = None  # margin, win fraction, fluency cost per multiplier
    released: str | None = None  # when it became stable
    generated: dict[str, Any] | None = None  # pairs a teacher wrote: the description, teacher, prompts, sampling

    @property
    def key(self) -> tuple[str, str, str, tuple[int, ...], str]:
        """Entries are unique by (behavior, model, method, layers, channel); it is also the sort order."""
        return (self.behavior, self.model, self.method, tuple(self.layers), self.channel or "")

    def describe(self) -> str:
        where = f" channel={self.channel}" if self.channel else ""
        version = f" version={self.version}" if self.version is not None else ""
        return f"behavior={self.behavior} model={self.model} method={self.method} layers={self.layers}{where}{version}"

    def on(self, channel: str | None) -> bool:
        """Whether this entry is on ``channel`` (None: any); a 0.1 catalog's entries were all published."""
        return channel is None or self.channel is None or self.channel == channel

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "<catalog>", index: int | None = None) -> CatalogEntry:
        label = "entry" if index is None else f"entries[{index}]"
        if not isinstance(obj, dict):
            raise CatalogError(
                f"{label} must be a JSON object, found {type(obj).__name__}", where=where, fix=_REBUILD_FIX
            )
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        for key in required:
            if key not in obj:
                raise CatalogError(f"{label} lacks the key {key!r}", where=where, fix=_REBUILD_FIX)
        for key in ("behavior", "method", "model", "path", "sha256"):
            if not isinstance(obj[key], str) or not obj[key]:
                raise CatalogError(
                    f"{label}.{key} must be a non-empty string, found {obj[key]!r}", where=where, fix=_REBUILD_FIX
                )
        layers = obj["layers"]
        if not isinstance(layers, list) or not layers or not all(_is_int(i) for i in layers):
            raise CatalogError(
                f"{label}.layers must be a non-empty list of integers, found {layers!r}", where=where, fix=_REBUILD_FIX
            )
        if not _is_int(obj["hidden_size"]):
            raise CatalogError(
                f"{label}.hidden_size must be an integer, found {obj['hidden_size']!r}", where=where, fix=_REBUILD_FIX
            )
        if not _SHA256.match(obj["sha256"]):
            raise CatalogError(
                f"{label}.sha256 is not a sha256 hex digest: {obj['sha256']!r}", where=where, fix=_REBUILD_FIX
            )
        metrics = obj.get("metrics", {})
        if metrics is None:
            metrics = {}
        if not isinstance(metrics, dict):
            raise CatalogError(
                f"{label}.metrics must be a JSON object, found {type(metrics).__name__}", where=where, fix=_REBUILD_FIX
            )
        rng = obj.get("safe_multiplier_range")
        if rng is not None and as_range(rng) is None:
            raise CatalogError(
                f"{label}.safe_multiplier_range must be [low, high] or null, found {rng!r}",
                where=where,
                fix=_REBUILD_FIX,
            )
        kwargs = {k: v for k, v in obj.items() if k in known}  # unknown keys: written by a newer minor version
        kwargs.update(layers=[int(i) for i in layers], metrics=metrics, safe_multiplier_range=as_range(rng))
        return cls(**kwargs)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def as_range(value: Any) -> list[float] | None:
    """``[low, high]`` as floats with low <= high, or None if ``value`` is not such a pair."""
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        and float(value[0]) <= float(value[1])
    ):
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
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "entries": [e.to_dict() for e in sorted(self.entries, key=lambda e: e.key)],
        }

    @classmethod
    def from_text(cls, text: str | bytes, where: str = "<catalog>", **kw: Any) -> Catalog:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(
                f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", where=where, fix=_REBUILD_FIX
            ) from None
        except UnicodeDecodeError as exc:
            raise CatalogError(f"not UTF-8 text ({exc.reason})", where=where, fix=_REBUILD_FIX) from None
        except (ValueError, RecursionError) as exc:  # an over-long integer, nesting too deep
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
            raise CatalogError(f"not usable JSON ({reason})", where=where, fix=_REBUILD_FIX) from None
        return cls.from_dict(obj, where=where, **kw)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "<catalog>", **kw: Any) -> Catalog:
        if not isinstance(obj, dict):
            raise CatalogError(
                f"a catalog must be a JSON object, found {type(obj).__name__}", where=where, fix=_REBUILD_FIX
            )
        for key in ("format", "format_version", "entries"):
            if key not in obj:
                raise CatalogError(f"the catalog lacks the key {key!r}", where=where, fix=_REBUILD_FIX)
        if obj["format"] != FORMAT:
            raise CatalogError(
                f"not a steerkit catalog (format={obj['format']!r}, expected {FORMAT!r})", where=where, fix=_REBUILD_FIX
            )
        version = obj["format_version"]
        if not _is_int(version) or version < 1:
            raise CatalogError(f"bad format_version {version!r}", where=where, fix=_REBUILD_FIX)
        if version > FORMAT_VERSION:
            raise CatalogError(
                f"catalog format version {version} is newer than this steerkit (reads up to {FORMAT_VERSION})",
                where=where,
                fix="upgrade steerkit",
            )
        if not isinstance(obj["entries"], list):
            raise CatalogError(
                f"'entries' must be a list, found {type(obj['entries']).__name__}", where=where, fix=_REBUILD_FIX
            )
        entries = [CatalogEntry.from_dict(e, where, i) for i, e in enumerate(obj["entries"])]
        seen: dict[tuple, CatalogEntry] = {}
        for e in entries:
            if e.key in seen:
                raise CatalogError(
                    f"two entries for the same vector key ({e.describe()}): {seen[e.key].path} and {e.path}",
                    where=where,
                    fix=_REBUILD_FIX,
                )
            seen[e.key] = e
        return cls(entries, where=where, **kw)

    # --- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, source: str | os.PathLike = ".", rev: str | None = None) -> Catalog:
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
            path = path / CATALOG
        root = path.parent.parent
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CatalogError(
                "no catalog here",
                where=str(path),
                fix="run `steerkit catalog build` in the project root (or `dvc pull "
                f"{CATALOG}`), or pass the project root or a repo URL + rev",
            ) from None
        except OSError as exc:
            raise CatalogError(f"cannot read the catalog ({exc.strerror or exc})", where=str(path)) from None
        return cls.from_text(data, where=str(path), root=root)

    @classmethod
    def from_repo(cls, repo: str, rev: str | None = None) -> Catalog:
        """``vectors/catalog.json`` of a git/DVC repository (URL or local path) at ``rev`` (None: default)."""
        where = f"{repo}@{rev or 'HEAD'}:{CATALOG}"
        data = read_at(CATALOG, repo, rev, where)
        return cls.from_text(data, where=where, repo=repo, rev=rev)

    # --- querying --------------------------------------------------------------------------------
    def behaviors(self) -> list[str]:
        return sorted({e.behavior for e in self.entries})

    def models(self) -> list[str]:
        return sorted({e.model for e in self.entries})

    def find(
        self,
        behavior: str,
        model: str | None = None,
        method: str | None = "bipo",
        layer: int | None = None,
        channel: str | None = "stable",
        version: int | None = None,
    ) -> CatalogEntry:
        """The one entry for ``behavior`` (and ``model``, ``method``, a ``layer`` it steers) on ``channel``.

        ``channel`` is ``"stable"`` (what applications load: the released version), ``"candidate"``
        (the pipeline's latest, released or not) or None (either); ``version`` asks for a release by
        number instead (also one that is no longer stable: from the release history). ``model``
        matches the id recorded in the vector or its folder name (``org/name`` or ``org--name``);
        ``method=None`` accepts any method. Raises ``NotInCatalogError`` (listing what exists) or
        ``AmbiguousEntryError`` (listing the candidates).
        """
        asked = (
            f"behavior={behavior!r}"
            + (f", model={model!r}" if model else "")
            + (f", method={method!r}" if method else "")
            + (f", layer={layer}" if layer is not None else "")
        )
        same_behavior = [e for e in self.entries if e.behavior == behavior]
        if not same_behavior:
            raise NotInCatalogError(
                f"no vector for behavior {behavior!r}; the catalog has "
                + (
                    f"behaviors {', '.join(self.behaviors())} for models {', '.join(self.models())}"
                    if self.entries
                    else "no vectors at all"
                ),
                where=self.where,
                fix="use one of the listed behaviors (`steerkit catalog ls`), or train the vector and rebuild "
                "the catalog",
            )
        hits = [
            e
            for e in same_behavior
            if (model is None or same_model(model, e.model))
            and (method is None or e.method == method)
            and (layer is None or layer in e.layers)
        ]
        if not hits:
            raise NotInCatalogError(
                f"no vector matches {asked}; for {behavior!r} the catalog has: "
                + "; ".join(e.describe() for e in same_behavior),
                where=self.where,
                fix="pick model/method/layer from the listed entries (`steerkit catalog ls`)",
            )
        if version is not None:
            return self._version(hits, version, asked)
        on = [e for e in hits if e.on(channel)]
        if not on:
            raise NotInCatalogError(
                f"no {channel} vector matches {asked}; there is: " + "; ".join(e.describe() for e in hits),
                where=self.where,
                fix=(
                    f"nothing has been released yet: promote the candidate (`steerkit catalog promote {behavior}`) "
                    f"or ask for it ({setting('channel', 'candidate')})"
                    if channel == "stable"
                    else f"ask for another channel ({option('channel')})"
                ),
            )
        if len(on) > 1:
            raise AmbiguousEntryError(
                f"{len(on)} vectors match {asked}: " + "; ".join(e.describe() for e in on),
                where=self.where,
                fix=f"narrow it down with {option('model')}, {option('method')} or {option('layer')}",
            )
        return on[0]

    def _version(self, hits: list[CatalogEntry], version: int, asked: str) -> CatalogEntry:
        """The entry of release ``version``: in the catalog, else made from the release history."""
        listed = [e for e in hits if e.version == version]
        if listed:
            return listed[0]
        template = hits[0]
        try:
            release = self.history().version(template.behavior, template.model, template.method, version)
        except SteerkitError as exc:
            raise NotInCatalogError(
                f"no version {version} matches {asked}: {exc.what}",
                where=self.where,
                fix="list the released versions with `steerkit catalog ls --history`",
            ) from None
        return dataclasses.replace(
            template,
            path=release.path,
            sha256=release.sha256,
            channel=None,
            version=release.version,
            metrics=release.metrics.get("summary", {}),
            released=release.when,
        )

    def history(self) -> Any:
        """The release history next to this catalog (a local project, or a repository at ``rev``)."""
        from ..layout import RELEASES
        from .releases import History

        if self.repo is None:
            return History.load(self.root if self.root is not None else Path("."))
        where = f"{self.repo}@{self.rev or 'HEAD'}:{RELEASES}"
        return History.from_text(read_at(RELEASES, self.repo, self.rev, where), Path("."), where)

    # --- loading ---------------------------------------------------------------------------------
    def read_bytes(self, entry: CatalogEntry) -> bytes:
        """The vector file's bytes, verified against the entry's sha256."""
        rel = _safe_relpath(entry.path, self.where)
        if self.repo is not None:
            where = f"{self.repo}@{self.rev or 'HEAD'}:{rel}"
            data = read_at(rel, self.repo, self.rev, where)
        else:
            root = self.root if self.root is not None else Path(".")
            where = str(root / rel)
            try:
                data = (root / rel).read_bytes()
            except FileNotFoundError:
                raise CatalogError(
                    "the catalogued vector file is missing",
                    where=where,
                    fix="fetch it with `dvc pull`, or rebuild the catalog with "
                    "`steerkit catalog build` if it was removed on purpose",
                ) from None
            except OSError as exc:
                raise CatalogError(f"cannot read the vector file ({exc.strerror or exc})", where=where) from None
        actual = sha256_bytes(data)
        if actual != entry.sha256:
            raise ChecksumError(
                f"vector file does not match its catalog entry: expected sha256 {entry.sha256}, got {actual}",
                where=where,
                fix="if the file was re-trained on purpose, rebuild the catalog "
                "(`steerkit catalog build`); otherwise restore it with `dvc pull` / `dvc checkout`",
            )
        return data

    def load(
        self,
        entry_or_behavior: CatalogEntry | str,
        model: str | None = None,
        method: str | None = "bipo",
        layer: int | None = None,
        channel: str | None = "stable",
        version: int | None = None,
    ) -> SteeringVector:
        """Find (unless given an entry; by default the stable release), read, verify the checksum and parse it."""
        entry = (
            entry_or_behavior
            if isinstance(entry_or_behavior, CatalogEntry)
            else self.find(entry_or_behavior, model=model, method=method, layer=layer, channel=channel, version=version)
        )
        data = self.read_bytes(entry)
        where = (
            f"{self.repo}@{self.rev or 'HEAD'}:{entry.path}"
            if self.repo is not None
            else str((self.root or Path(".")) / entry.path)
        )
        return SteeringVector.from_bytes(data, where=where)


def same_model(query: str, recorded: str) -> bool:
    """Does a model the user named (id or folder name) name the model a vector records?"""
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
        raise CatalogError(
            f"entry path {path!r} is not a relative path inside the project", where=where, fix=_REBUILD_FIX
        )
    return p.as_posix()
