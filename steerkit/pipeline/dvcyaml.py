"""The parts of ``dvc.yaml`` derived from the stage graph, and keeping them in step.

``dvc.yaml`` is written by people (comments, order, DVC's words), but two parts of it follow from the
graph: each stage's code deps (``steerkit.pipeline.code``, after ``MARKER`` in its deps) and the
``artifacts:`` section (the vectors as DVC's registry sees them, from ``graph.artifacts``). ``sync``
rewrites both in the text (``steerkit pipeline sync --write``); a test fails when they drift.
"""

from __future__ import annotations

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


def sync(text: str, artifacts: dict[str, dict]) -> str:
    """Both derived parts brought up to date."""
    return with_artifacts(with_code_deps(text), artifacts)
