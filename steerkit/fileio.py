"""Atomic file and folder writes and checksums: files are the interface, so none is ever half-written."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import StorageError


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` only if the block succeeds.

    A failed write (disk full, no permission, ...) raises ``StorageError`` (also an ``OSError``);
    ``path`` then keeps its previous content and no temporary file is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise storage_error(exc, path) from exc
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise storage_error(exc, path) from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    with atomic_output(path) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def storage_error(exc: OSError, path: Path) -> StorageError:
    """The StorageError a failed write of ``path`` raises: the OS's reason and what to do about it."""
    reason = exc.strerror or str(exc)
    fix = (
        "free disk space and run it again"
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
        else "check that the folder exists, is writable and is not a file, then run it again"
    )
    err = StorageError(f"cannot write the file ({reason}); nothing was changed", str(path), fix)
    err.errno = exc.errno
    return err


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON (the same object always writes the same bytes)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """One JSON object per line."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str | None:
    """sha256 of a file, or of a folder's sorted (relative path, file sha256) list; None if missing."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
        return h.hexdigest()
    return None


def replace_dir(new: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put folder ``new`` where ``final`` is; the old content is removed only after the move succeeded."""
    new, final = Path(new), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def scratch_dir(folder: str | os.PathLike, prefix: str) -> Path:
    """A fresh scratch folder's path ``folder/<prefix><host>-<pid>.<random>``; first removes the ones with
    ``prefix`` whose writer, a process on this host, is gone (killed before it could clean up).

    Folders of writers on other hosts (a cluster's shared filesystem) are never touched."""
    folder = Path(folder)
    host = socket.gethostname()
    for old in folder.glob(f"{prefix}*") if folder.is_dir() else ():
        writer, _, _ = old.name[len(prefix) :].rpartition(".")
        owner, _, pid = writer.rpartition("-")
        if owner == host and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return folder / f"{prefix}{host}-{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def exclusive(path: str | os.PathLike, timeout_s: float, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold the exclusive OS lock ``<path>.lock`` for the block (released with the process if it dies).

    Waits up to ``timeout_s`` for another holder, then raises ``busy()`` (an error in the caller's words).
    """
    from filelock import FileLock, Timeout

    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise busy() from None
    try:
        yield
    finally:
        lock.release()
