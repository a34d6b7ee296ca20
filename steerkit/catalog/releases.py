"""Releases: numbered versions of each vector, a stable channel, and an append-only history (git-tracked).

A release copies the vector file into ``vectors/released/<model>/<behavior>/<method>.v<N>.safetensors``
and appends an event to ``vectors/releases.json``: who, when, why, the numbers behind the decision,
the file's sha256, the held-out set it was judged on (None: promoted by hand without a gate), and the
git commit and DVC version of the file it came from. The stable version of a (behavior, model,
method) is the one the last event (a promotion or a rollback) names; nothing in the history is ever
rewritten. Commit both after a run whose releases you keep: the git-tracked copies are the only
place every version is loadable from by number (a copy that is missing is an error that says to
restore it from git, never a guess from another revision).

Writers hold the history's lock. A release made on a gate's decision names the stable version the
gate compared against (``expect_stable``): if stable changed since (a rollback, another release), the
release is refused rather than made on a stale decision. Bytes already at a version's path are
verified before they are trusted; foreign bytes are kept aside, never overwritten.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import subprocess
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..errors import ChecksumError, DataError
from ..fileio import atomic_write_bytes, atomic_write_json, exclusive, sha256_bytes
from ..layout import released_path, releases_path

log = logging.getLogger(__name__)

FORMAT = "steerkit.releases"
FORMAT_VERSION = 2  # 2: a rollback records the version it rolled back from
EVENTS = ("promote", "rollback")
LOCK_TIMEOUT_S = 120.0


class ReleaseError(DataError):
    """A release cannot be made, found or undone (nothing to promote, no earlier version, a broken history)."""


class StaleDecisionError(ReleaseError):
    """The stable release changed after the gate compared a candidate against it: the decision is stale."""


#: ``promote(expect_stable=ANY)``: release whatever is stable now (a person's decision)
ANY: object = object()
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Release:
    """One event of the history: ``version`` of (behavior, model, method) became stable."""

    event: Literal["promote", "rollback"]
    behavior: str
    model: str
    method: str
    version: int
    sha256: str
    path: str  # the released copy, posix, relative to the project root
    source: str  # the file it was released from (the candidate)
    who: str
    when: str
    why: str
    metrics: dict[str, Any] = field(default_factory=dict)
    test_sha256: str | None = None  # the held-out set it was judged on
    git_rev: str | None = None
    dvc_md5: str | None = None
    rolled_back_from: int | None = None  # a rollback: the version that was stable until it

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.behavior, self.model, self.method)


def whoami() -> str:
    """``$STEERKIT_RELEASER``, else git's user.name, else user@host (a scheduled run names its account)."""
    if os.environ.get("STEERKIT_RELEASER"):
        return os.environ["STEERKIT_RELEASER"]
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class History:
    """The release history of a project: every event, oldest first."""

    root: Path
    events: list[Release] = field(default_factory=list)

    @classmethod
    def load(cls, root: str | os.PathLike = ".") -> History:
        """The project's history (empty when nothing was released yet)."""
        path = releases_path(root)
        if not path.is_file():
            return cls(Path(root))
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ReleaseError(f"cannot read the release history ({exc.strerror or exc})", where=str(path)) from None
        return cls.from_text(text, Path(root), str(path))

    @classmethod
    def from_text(cls, text: str | bytes, root: Path, where: str) -> History:
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT or not isinstance(raw.get("events"), list):
                raise ValueError(f"not a {FORMAT} file")
            if raw.get("format_version", 1) > FORMAT_VERSION:
                raise ValueError(f"format version {raw['format_version']} is newer than this steerkit")
            events = [_event(e, i) for i, e in enumerate(raw["events"])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ReleaseError(
                f"the release history is unreadable ({exc}); nothing was changed",
                where=where,
                fix="restore it from git (`git checkout vectors/releases.json`): it is append-only, "
                "so the committed copy plus this run's releases is all there is",
            ) from None
        return cls(root, events)

    def save(self) -> None:
        atomic_write_json(
            releases_path(self.root),
            {"format": FORMAT, "format_version": FORMAT_VERSION, "events": [asdict(e) for e in self.events]},
        )

    def of(self, behavior: str, model: str, method: str = "bipo") -> list[Release]:
        return [e for e in self.events if e.key == (behavior, model, method)]

    def stable(self, behavior: str, model: str, method: str = "bipo") -> Release | None:
        """The release the last event of (behavior, model, method) made stable, or None."""
        mine = self.of(behavior, model, method)
        return mine[-1] if mine else None

    def version(self, behavior: str, model: str, method: str, version: int) -> Release:
        for e in self.of(behavior, model, method):
            if e.version == version and e.event == "promote":
                return e
        known = sorted({e.version for e in self.of(behavior, model, method)})
        raise ReleaseError(
            f"no version {version} of {behavior} ({model}, {method}); released: {known or 'none'}",
            where=str(releases_path(self.root)),
            fix="pick a released version",
        )

    def rolled_back(self, behavior: str, model: str, method: str, sha256: str) -> Release | None:
        """The rollback that took the release with these bytes out of stable, unless it was promoted again since.

        The gate holds such a candidate: re-releasing what a person rolled back needs a person's promote.
        """
        versions = {e.version: e.sha256 for e in self.of(behavior, model, method) if e.event == "promote"}
        veto: Release | None = None
        for e in self.of(behavior, model, method):
            if e.event == "rollback" and e.rolled_back_from is not None and versions.get(e.rolled_back_from) == sha256:
                veto = e
            elif e.event == "promote" and e.sha256 == sha256:
                veto = None
        return veto

    def keys(self) -> list[tuple[str, str, str]]:
        return sorted({e.key for e in self.events})

    def read(self, release: Release) -> bytes:
        """The released copy's bytes, verified against the release."""
        path = self.root / release.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ReleaseError(
                f"the released copy of v{release.version} is missing ({exc.strerror or exc})",
                where=str(path),
                fix="restore it from git (`git checkout -- vectors/released`); commit vectors/released/ with "
                "vectors/releases.json after every run whose releases you keep",
            ) from None
        if sha256_bytes(data) != release.sha256:
            raise ChecksumError(
                f"released file does not match its release: expected sha256 {release.sha256}",
                where=str(path),
                fix="restore it from git (`git checkout -- vectors/released`)",
            )
        return data


def _event(raw: Any, index: int) -> Release:
    """One event of the history file, checked (a hand edit that breaks it is named, not half-read)."""
    if not isinstance(raw, dict):
        raise ValueError(f"events[{index}] is not an object")
    e = Release(**raw)
    if e.event not in EVENTS:
        raise ValueError(f"events[{index}].event is {e.event!r}, not one of {', '.join(EVENTS)}")
    if not isinstance(e.version, int) or isinstance(e.version, bool) or e.version < 1:
        raise ValueError(f"events[{index}].version must be a positive integer, found {e.version!r}")
    if not isinstance(e.sha256, str) or not _SHA256.match(e.sha256):
        raise ValueError(f"events[{index}].sha256 is not a sha256 hex digest: {e.sha256!r}")
    for key in ("behavior", "model", "method", "path"):
        if not isinstance(getattr(e, key), str) or not getattr(e, key):
            raise ValueError(f"events[{index}].{key} must be a non-empty string")
    return e


def _put_copy(path: Path, data: bytes) -> None:
    """Write a version's copy; bytes already there are kept if they are the same, set aside if not."""
    if path.is_file():
        old = path.read_bytes()
        if old == data:
            return
        aside = path.with_name(f"{path.name}.orphan-{sha256_bytes(old)[:12]}")
        os.replace(path, aside)
        log.warning(
            "%s held other bytes than the release (left by a failed or undone release): kept as %s", path, aside
        )
    atomic_write_bytes(path, data)


def _state(release: Release | None) -> tuple[int, str] | None:
    return None if release is None else (release.version, release.sha256)


def locked(root: str | os.PathLike) -> AbstractContextManager:
    """One writer of the history at a time (``vectors/releases.json.lock``)."""
    path = releases_path(root)
    return exclusive(
        path,
        LOCK_TIMEOUT_S,
        lambda: ReleaseError(
            f"another process has held the release lock for over {LOCK_TIMEOUT_S:.0f} s",
            where=f"{path}.lock",
            fix="wait for the other steerkit process to finish and retry",
        ),
    )


def promote(
    root: str | os.PathLike,
    behavior: str,
    model: str,
    method: str,
    data: bytes,
    source: str,
    why: str,
    metrics: dict[str, Any] | None = None,
    test_sha256: str | None = None,
    git_rev: str | None = None,
    dvc_md5: str | None = None,
    who: str | None = None,
    expect_stable: Any = ANY,
) -> Release:
    """Make ``data`` (a vector file's bytes) the stable version: a new number, or the number it already has.

    ``expect_stable``: the stable release the decision was made against, as ``(version, sha256)`` or
    None (nothing released); if stable is another one now, nothing is released (StaleDecisionError).
    """
    root = Path(root)
    with locked(root):
        history = History.load(root)
        sha = sha256_bytes(data)
        now_stable = _state(history.stable(behavior, model, method))
        if expect_stable is not ANY and now_stable != (tuple(expect_stable) if expect_stable else None):
            said = "nothing" if not expect_stable else f"v{expect_stable[0]}"
            is_now = "nothing" if now_stable is None else f"v{now_stable[0]}"
            raise StaleDecisionError(
                f"{behavior} ({model}, {method}): the decision was made against stable {said}, "
                f"but stable is {is_now} now (a rollback or another release came in between); nothing released",
                where=str(releases_path(root)),
                fix=f"re-run the gate for {behavior} (`steerkit pipeline stage gate {behavior}`), then release",
            )
        mine = history.of(behavior, model, method)
        known = next((e for e in mine if e.sha256 == sha and e.event == "promote"), None)
        version = known.version if known else max((e.version for e in mine), default=0) + 1
        path = released_path(root, model, behavior, method, version)
        _put_copy(path, data)
        release = Release(
            "promote",
            behavior,
            model,
            method,
            version,
            sha,
            path.relative_to(root).as_posix(),
            source,
            who or whoami(),
            now(),
            why,
            metrics or {},
            test_sha256,
            git_rev,
            dvc_md5,
        )
        history.events.append(release)
        history.save()
    return release


def rollback(
    root: str | os.PathLike, behavior: str, model: str, method: str = "bipo", why: str = "", who: str | None = None
) -> Release:
    """Make the version stable that was stable before the current one."""
    root = Path(root)
    with locked(root):
        history = History.load(root)
        mine = history.of(behavior, model, method)
        if not mine:
            raise ReleaseError(
                f"{behavior} ({model}, {method}) has no release to roll back",
                fix="promote a version first (`steerkit catalog promote`)",
            )
        stack: list[int] = []  # the stable versions in the order they became stable, rolled-back ones removed
        for e in mine:
            if e.event == "promote":
                stack.append(e.version)
            elif stack:
                stack.pop()
        current = mine[-1].version
        if len(stack) < 2:
            raise ReleaseError(
                f"{behavior} ({model}, {method}) has no version before v{current} to go back to",
                fix=f"promote another version instead: `steerkit catalog promote {behavior} --version N --why …`",
            )
        back = history.version(behavior, model, method, stack[-2])
        release = Release(
            "rollback",
            behavior,
            model,
            method,
            back.version,
            back.sha256,
            back.path,
            back.source,
            who or whoami(),
            now(),
            why or f"rolled back from v{current}",
            back.metrics,
            back.test_sha256,
            back.git_rev,
            back.dvc_md5,
            rolled_back_from=current,
        )
        history.events.append(release)
        history.save()
    return release
