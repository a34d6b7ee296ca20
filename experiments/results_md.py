"""RESULTS.md is written by several experiment scripts: each one owns a marked section.

A section sits between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``; a script replaces only
its own, so another script's numbers and the hand-written notes around them stay as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

from steerkit.fileio import atomic_write_text

TITLE = "# Results on the embedded model (SmolLM2-135M-Instruct)\n"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` set to ``body`` (appended before the hand-written notes if new)."""
    block = f"<!-- begin {name} -->\n{body.strip()}\n<!-- end {name} -->\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->\n.*?<!-- end {re.escape(name)} -->\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    text = text if text.strip() else TITLE
    notes = text.find("\n## Reading these numbers")
    if notes < 0:
        return text.rstrip("\n") + "\n\n" + block
    return text[:notes].rstrip("\n") + "\n\n" + block + text[notes:]


def write_section(path: Path, name: str, body: str) -> None:
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write_text(path, replace_section(old, name, body))
