"""Mirroring the release history into DVC's registry (GTO): what to tag, planned purely from the history."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerkit.catalog.registry import Action, RegistryError, plan, semver
from steerkit.catalog.releases import History, Release

NAME, PATH = "m-b", "vectors/m/b/L3.safetensors"
ARTIFACTS = {("b", "m", "bipo"): (NAME, PATH)}


def _event(kind: str, version: int, rolled_back_from: int | None = None) -> Release:
    sha = f"{version:064x}"
    return Release(
        kind, "b", "m", "bipo", version, sha, f"vectors/released/m/b/bipo.v{version}.safetensors", PATH,
        "t", "2026-12-07T00:00:00+00:00", "why", rolled_back_from=rolled_back_from,
    )  # fmt: skip


def _plan(events, registered=None, stable_now=None):
    history = History(Path("."), list(events))
    return plan(history, ARTIFACTS, registered or {}, stable_now or {}, lambda e, path: f"commit-of-v{e.version}")


def test_every_release_is_registered_at_its_commit_and_stable_assigned():
    actions = _plan([_event("promote", 1), _event("promote", 2)])
    assert actions == [
        Action("register", NAME, "v1.0.0", "commit-of-v1"),
        Action("register", NAME, "v2.0.0", "commit-of-v2"),
        Action("assign", NAME, "v2.0.0"),
    ]
    assert [str(a) for a in actions][-1] == "m-b#stable → v2.0.0"


def test_running_twice_changes_nothing():
    events = [_event("promote", 1), _event("promote", 2)]
    assert _plan(events, {NAME: {"v1.0.0", "v2.0.0"}}, {NAME: ["v2.0.0"]}) == []


def test_a_rollback_moves_stable_back():
    events = [_event("promote", 1), _event("promote", 2), _event("rollback", 1, rolled_back_from=2)]
    assert _plan(events, {NAME: {"v1.0.0", "v2.0.0"}}, {NAME: ["v2.0.0"]}) == [
        Action("unassign", NAME, "v2.0.0"),
        Action("assign", NAME, "v1.0.0"),
    ]


def test_a_release_without_a_declared_artifact_is_an_error():
    other = Release("promote", "x", "m", "bipo", 1, "a" * 64, "p", "s", "t", "w", "y")
    with pytest.raises(RegistryError, match="declares no artifact for x"):
        plan(History(Path("."), [other]), ARTIFACTS, {}, {}, lambda e, p: "c")
    assert semver(3) == "v3.0.0"
