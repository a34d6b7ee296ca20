"""DVC's model registry (GTO) for the releases: a version tag per release, the ``stable`` stage where
``vectors/releases.json`` says it is.

``dvc.yaml`` declares each behavior's vector as a DVC artifact (``artifacts:``; its name from
``steerkit.layout.artifact_name``, its path the vector file the train stage writes, its ``meta`` the behavior,
model and method). ``register`` mirrors the release history into git tags the GTO way: release N of
a vector becomes ``<name>@vN.0.0`` on the commit whose artifact file holds exactly those bytes (the
commit made after the run that released it), and the version the history makes stable holds
``<name>#stable#K`` (a rollback unassigns the newer version and assigns the older one again). It is
opt-in because it writes tags, and safe to run twice: what is tagged already is left alone. Then a
downstream application fetches the stable vector with ``dvc artifacts get REPO NAME --stage stable``
or ``Catalog.open(REPO).find(..., channel="stable")``, and the two agree.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..fileio import sha256_bytes
from ..layout import model_slug
from .releases import History, Release

STAGE = "stable"


class RegistryError(DataError):
    """The releases cannot be mirrored into DVC's registry (no artifact declared, a version in no commit)."""


def semver(version: int) -> str:
    return f"v{version}.0.0"


@dataclass(frozen=True)
class Action:
    """One change to the registry: ``register`` a version at ``commit``, or ``assign``/``unassign`` stable."""

    kind: str  # register | assign | unassign
    name: str
    version: str
    commit: str | None = None

    def __str__(self) -> str:
        at = f" at {self.commit[:12]}" if self.commit else ""
        return {
            "register": f"{self.name}@{self.version}{at}",
            "assign": f"{self.name}#{STAGE} → {self.version}",
            "unassign": f"{self.name}#{STAGE} off {self.version}",
        }[self.kind]


def declared(root: str | Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    """The artifacts ``dvc.yaml`` declares: (behavior, model folder, method) → (name, path)."""
    import yaml

    path = Path(root) / "dvc.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read the pipeline ({exc})", where=str(path)) from None
    out = {}
    for name, a in (raw.get("artifacts") or {}).items():
        meta = a.get("meta") or {}
        out[(meta.get("behavior"), meta.get("model"), meta.get("method", "bipo"))] = (name, a["path"])
    return out


def plan(
    history: History,
    artifacts: dict[tuple[str, str, str], tuple[str, str]],
    registered: dict[str, set[str]],
    stable_now: dict[str, list[str]],
    commit_of: Any,
) -> list[Action]:
    """What to tag so the registry says what the history says (pure but for ``commit_of(release, path)``).

    ``registered``: the versions each artifact has; ``stable_now``: the versions its stable stage is on.
    """
    actions: list[Action] = []
    for key in history.keys():
        behavior, model, method = key
        found = artifacts.get((behavior, model_slug(model), method))
        if found is None:
            raise RegistryError(
                f"dvc.yaml declares no artifact for {behavior} ({model}, {method})",
                where="dvc.yaml: artifacts",
                fix="run `steerkit pipeline sync --write` (the artifacts follow params.yaml's behaviors)",
            )
        name, path = found
        have = set(registered.get(name, set()))
        for e in history.of(*key):
            if e.event == "promote" and semver(e.version) not in have:
                actions.append(Action("register", name, semver(e.version), commit_of(e, path)))
                have.add(semver(e.version))
        want = semver(history.stable(*key).version)
        now = stable_now.get(name, [])
        actions += [Action("unassign", name, v) for v in now if v != want]
        if want not in now:
            actions.append(Action("assign", name, want))
    return actions


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _commit_of(root: Path):
    """``commit_of(release, path)``: the newest commit whose ``path`` holds the release's bytes."""
    from .remote import read_at

    def find(release: Release, path: str) -> str:
        copies = _git(root, "log", "--format=%H", "--diff-filter=A", "--", release.path).split()
        for commit in [*copies, *_git(root, "rev-list", "--max-count=200", "HEAD").split()]:
            try:
                if sha256_bytes(read_at(path, str(root), commit, f"{path}@{commit[:12]}")) == release.sha256:
                    return commit
            except DataError:
                continue
        raise RegistryError(
            f"v{release.version} of {release.behavior} ({release.model}) is in no commit of this repository "
            f"({path} never held its bytes in a commit)",
            where=str(root),
            fix="commit after every run whose releases you keep (dvc.lock, vectors/releases.json, "
            "vectors/released/), and `dvc push`; then run `steerkit catalog register` again",
        )

    return find


def register(root: str | Path = ".", dry_run: bool = False) -> list[Action]:
    """Tag every release of ``vectors/releases.json`` not tagged yet, and put ``stable`` where it is stable."""
    import gto.api as gto

    root = Path(root).resolve()
    history, artifacts = History.load(root), declared(root)
    registered: dict[str, set[str]] = {}
    stable_now: dict[str, list[str]] = {}
    for name, _ in artifacts.values():
        if _known(root, name):  # GTO knows an artifact by its tags; one never tagged has nothing to show
            registered[name] = {v["version"] for v in gto.show(str(root), name)}
            stable_now[name] = [v.version for v in gto.find_versions_in_stage(str(root), name, STAGE) or []]
    actions = plan(history, artifacts, registered, stable_now, _commit_of(root))
    if not dry_run:
        for a in actions:
            if a.kind == "register":
                gto.register(str(root), a.name, a.commit, version=a.version, message=f"steerkit release {a.version}")
            elif a.kind == "unassign":
                gto.unassign(str(root), a.name, version=a.version, stage=STAGE, message="steerkit: no longer stable")
            else:
                gto.assign(str(root), a.name, STAGE, version=a.version, message="steerkit: stable")
    return actions


def _known(root: Path, name: str) -> bool:
    """Whether any git tag names the artifact yet (GTO's ``show`` of an unknown name raises)."""
    return bool(_git(root, "tag", "--list", f"{name}@*"))
