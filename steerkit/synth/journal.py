"""A generation that stops loses nothing: every reply the teacher gave is kept, and asked again never.

The journal is an append-only JSON-lines file beside the output (``.<name>.journal.jsonl``): one line
per answered request, keyed by the request and the teacher (``Request.key``). A run that dies — the
endpoint went away, the process was killed — leaves it; the next run with the same settings reads it
and asks only what was not answered yet. A torn last line (killed mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .teacher import Request, Teacher


class Journal:
    """The replies a teacher gave, by request key, kept in ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.replies: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.replies[row["key"]] = row["reply"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill: that request is asked again

    def record(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Append answered requests and make them durable before going on."""
        if not pairs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for key, reply in pairs:
                fh.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def ask(
        self, teacher: Teacher, requests: Sequence[Request], chunk: int = 8, progress: Callable | None = None
    ) -> list[str]:
        """Every request's reply: from the journal, else from the teacher (``chunk`` at a time, each chunk
        recorded as soon as it is answered)."""
        keys = [r.key(teacher.name) for r in requests]
        todo = [i for i, k in enumerate(keys) if k not in self.replies]
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            replies = teacher.chat([requests[i] for i in part])
            self.record([(keys[i], reply) for i, reply in zip(part, replies)])
            self.replies.update({keys[i]: reply for i, reply in zip(part, replies)})
            if progress is not None:
                progress(len(requests) - len(todo) + start + len(part), len(requests))
        return [self.replies[k] for k in keys]

    def close(self) -> None:
        """The run finished: its output holds everything; the journal goes."""
        self.path.unlink(missing_ok=True)
