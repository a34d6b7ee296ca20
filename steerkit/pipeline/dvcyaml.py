"""The parts of ``dvc.yaml`` derived from the stage graph, and keeping them in step.

``dvc.yaml`` is written by people (comments, order, DVC's words), but some of it follows from the
graph: each stage's code deps (``steerkit.pipeline.code``, after ``MARKER`` in its deps), the
``artifacts:`` section (the vectors as DVC's registry sees them), and the ``foreach:`` of the stages
whose instances DVC's templates cannot pick out of params.yaml — ``generate`` (only the behaviors
whose data says ``generate:``) and ``prepare`` (files given, or the ones the generate stage writes).
``sync`` rewrites them all in the text (``steerkit pipeline sync --write``); a test fails when they drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .code import stage_code

#: the line in dvc.yaml after which a stage's code deps are listed
MARKER = "# the code it runs (steerkit.pipeline.code; `steerkit pipeline sync --write` keeps this list)"
ARTIFACTS = (
    "artifacts:   # the vectors in DVC's registry (from steerkit.pipeline.graph; `steerkit pipeline sync --write`)"
)


def with_code_deps(text: str) -> str:
    """dvc.yaml's text with each stage's code list (after ``MARKER`` in its deps) replaced by ``stage_code``."""
    lines, out, stage, i = text.splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        head = stripped.split("#")[0].strip()
        if line.startswith("  ") and not line.startswith("   ") and head.endswith(":") and " " not in head:
            stage = head[:-1]  # a stage's name: two spaces in, under `stages:`
        out.append(line)
        i += 1
        if stripped == MARKER and stage is not None:
            indent = line[: len(line) - len(line.lstrip())]
            while i < len(lines) and lines[i].strip().startswith("- steerkit/"):
                i += 1  # the old list
            out += [f"{indent}- {path}" for path in stage_code(stage)]
    return "\n".join(out) + "\n"


def with_artifacts(text: str, artifacts: dict[str, dict]) -> str:
    """dvc.yaml's text with its ``artifacts:`` section (the last one in the file) replaced by ``artifacts``."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("artifacts:")), len(lines))
    body = yaml.safe_dump(artifacts, sort_keys=True, default_flow_style=None, width=120).splitlines()
    keep = lines[:start]
    while keep and not keep[-1].strip():
        keep.pop()
    return "\n".join([*keep, "", ARTIFACTS, *(f"  {b}" for b in body)]) + "\n"


def with_foreach(text: str, stage: str, items: dict[str, dict]) -> str:
    """dvc.yaml's text with stage ``stage``'s ``foreach:`` replaced by ``items`` (inline mappings, one a line)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.split("#")[0].rstrip() != f"  {stage}:":
            continue
        while i < len(lines) and not lines[i].startswith("    foreach:"):
            out.append(lines[i])
            i += 1
        if i == len(lines):
            break
        comment = lines[i].partition("#")[2].strip()
        i += 1
        while i < len(lines) and lines[i].startswith("      "):  # the old items
            i += 1
        head = "    foreach:" + (" {}" if not items else "")
        out.append(f"{head:<32}# {comment}" if comment else head)
        for key, item in items.items():
            out.append(f"      {key}: " + yaml.safe_dump(item, default_flow_style=True, width=1000).strip())
    return "\n".join(out) + "\n"


def sync(text: str, artifacts: dict[str, dict], foreach: dict[str, dict[str, dict]] | None = None) -> str:
    """Every derived part brought up to date (``foreach``: stage → its items)."""
    for stage, items in (foreach or {}).items():
        text = with_foreach(text, stage, items)
    return with_artifacts(with_code_deps(text), artifacts)


def in_step(root: str | Path, params: Any) -> str | None:
    """None when the project's dvc.yaml says what its params.yaml and the code say; else what to run."""
    from .graph import artifacts, foreach_items

    path = Path(root) / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    if sync(text, artifacts(params), foreach_items(params)) == text:
        return None
    return f"{path} is out of step with params.yaml or the code: run `steerkit pipeline sync --write` (then commit it)"
