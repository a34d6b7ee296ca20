"""Reading a file as it was at a git revision of a repository (local path or URL), through ``dvc.api``.

The catalog's remote reader and the release history's old versions both come here, so DVC is imported in
one place and every failure reads the same: which file, which revision, what to check.
"""

from __future__ import annotations

import os

from ..errors import DataError


class RevisionError(DataError):
    """A file cannot be read from a repository at a revision (unknown revision, no remote, not tracked)."""


def read_at(path: str, repo: str, rev: str | None, where: str) -> bytes:
    """The bytes of ``path`` (relative to the repository root) at ``rev`` (None: the working copy)."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    import dvc.api

    try:
        with dvc.api.open(path, repo=repo, rev=rev, mode="rb") as fh:
            return fh.read()
    except Exception as exc:
        at = f" at {rev}" if rev else ""
        raise RevisionError(
            f"cannot read {path}{at} from {repo} ({type(exc).__name__}: {exc})",
            where=where,
            fix="check the repository and revision; DVC-tracked files also need a reachable DVC remote (`dvc pull`)",
        ) from None
