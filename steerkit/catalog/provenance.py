"""Where a file came from: the git commit of the project and the md5 DVC recorded for it in ``dvc.lock``."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)


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


def relpath_in(data_file: Any, root: Path) -> str | None:
    """A file named in metadata as a posix path relative to ``root`` (None: not a path, or outside it)."""
    if not isinstance(data_file, str) or not data_file:
        return None
    p = Path(data_file)
    if p.is_absolute():
        try:
            p = Path(os.path.abspath(p)).relative_to(os.path.abspath(root))
        except ValueError:
            return None
    return PurePosixPath(p.as_posix()).as_posix().removeprefix("./")


def dvc_version(lock: dict, data_file: str | None) -> str | None:
    """The md5 DVC recorded for a file: the file itself, else the nearest folder holding it (None: not tracked).

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
