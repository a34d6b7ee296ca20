"""Where every artifact lives: the one path map of a steerkit project (DESIGN.md's chain).

Every path the library, the CLI, the pipeline and the flow use is built here and nowhere else.
Functions take the project ``root`` (``"."`` gives the relative paths ``dvc.yaml`` names) and a
model spec or its folder name (``model_slug`` makes one from the other).

    data/pairs/<behavior>/{train,test}.jsonl            prepare
    vectors/<model>/<behavior>/L<layer>[.<method>].safetensors
                                                        train (the folder is the stage's output)
    reports/<stage>/<model>/<name>.{json,png,md}        evaluate, derive, transfer, compose
    models/<model>/<name>/                              derive (a LoRA adapter folder)
    vectors/catalog.json                                catalog
    vectors/releases.json, vectors/released/<model>/<behavior>/<method>.v<N>.safetensors
                                                        releases (git-tracked: the history and the copies)
    reports/gate/<model>/<behavior>.json                gate (the release decision and its numbers)
    .cache/pipeline-staging/                            train writes here, then moves into place
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from .errors import DataError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CATALOG = "vectors/catalog.json"
RELEASES = "vectors/releases.json"
SPLITS = ("train", "test")


def safe_name(name: str, kind: str = "behavior") -> str:
    """A name that is safe as one path component: no separators, no '..', no leading dot."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise DataError(
            f"{kind} name {name!r} is not allowed",
            where=kind,
            fix="use letters, digits, '.', '_' and '-' only (no '/', '\\' or '..'), e.g. power-seeking",
        )
    return name


def model_slug(model: str) -> str:
    """A model spec as one folder name: 'org/name' -> 'org--name', paths -> their last part."""
    spec = model.rstrip("/")
    if "/" in spec and not Path(spec).exists():
        spec = spec.replace("/", "--")
    else:
        spec = Path(spec).name
    return safe_name(re.sub(r"[^A-Za-z0-9._-]", "-", spec).lstrip(".") or "model", "model")


def report_name(behavior: str, method: str | None = "bipo") -> str:
    """A report's file stem: the behavior for BiPO vectors, ``<behavior>.<method>`` for others."""
    return safe_name(behavior) if method in (None, "bipo") else f"{safe_name(behavior)}.{safe_name(method, 'method')}"


# ---------------------------------------------------------------------------------------- data
def pairs_root(root: str | Path = ".") -> Path:
    """``data/pairs``: every behavior's prepared pairs (the gate measures off-target effects on all of them)."""
    return Path(root) / "data" / "pairs"


def pairs_dir(root: str | Path, behavior: str) -> Path:
    return pairs_root(root) / safe_name(behavior)


def pairs_file(root: str | Path, behavior: str, split: str) -> Path:
    """``data/pairs/<behavior>/<split>.jsonl`` (split: train or test)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", where="split", fix="use train or test")
    return pairs_dir(root, behavior) / f"{split}.jsonl"


def pairs_source(root: str | Path, behavior: str) -> Path:
    """Where a behavior's pairs came from (``prepare`` writes it beside them: the inputs, a generation's provenance)."""
    return pairs_dir(root, behavior) / "source.json"


def generated_dir(root: str | Path, behavior: str) -> Path:
    """Pairs a teacher wrote for a behavior (the generate stage): ``{train,test}.jsonl`` and ``generation.json``."""
    return Path(root) / "data" / "generated" / safe_name(behavior)


def neutral_texts_file() -> Path:
    """The neutral paragraphs shipped with steerkit (package data): the default fluency probe."""
    return Path(str(resources.files("steerkit.data").joinpath("neutral.txt")))


# ------------------------------------------------------------------------------------- vectors
def vectors_dir(root: str | Path, model: str) -> Path:
    return Path(root) / "vectors" / model_slug(model)


def vector_dir(root: str | Path, model: str, behavior: str) -> Path:
    """One behavior's vectors for one model: the train stage writes this folder as a whole."""
    return vectors_dir(root, model) / safe_name(behavior)


def vector_path(root: str | Path, model: str, behavior: str, layer: int, method: str = "bipo") -> Path:
    suffix = "" if method == "bipo" else f".{safe_name(method, 'method')}"
    return vector_dir(root, model, behavior) / f"L{int(layer)}{suffix}.safetensors"


def catalog_path(root: str | Path = ".") -> Path:
    return Path(root) / CATALOG


def releases_path(root: str | Path = ".") -> Path:
    """The release history (git-tracked, append-only)."""
    return Path(root) / RELEASES


def released_dir(root: str | Path = ".") -> Path:
    """Where released vectors are kept (git-tracked copies), apart from the pipeline's candidates."""
    return Path(root) / "vectors" / "released"


def released_path(root: str | Path, model: str, behavior: str, method: str, version: int) -> Path:
    """``vectors/released/<model>/<behavior>/<method>.v<N>.safetensors``."""
    return (
        released_dir(root)
        / model_slug(model)
        / safe_name(behavior)
        / f"{safe_name(method, 'method')}.v{int(version)}.safetensors"
    )


# ------------------------------------------------------------------------------------- reports
def reports_dir(root: str | Path, stage: str, model: str) -> Path:
    return Path(root) / "reports" / safe_name(stage, "stage") / model_slug(model)


def report_path(root: str | Path, stage: str, model: str, name: str, ext: str = "json") -> Path:
    return reports_dir(root, stage, model) / f"{safe_name(name, 'report')}.{ext}"


# -------------------------------------------------------------------------------------- models
def adapter_dir(root: str | Path, model: str, name: str) -> Path:
    """A derived model (LoRA adapter folder) of ``model``."""
    return Path(root) / "models" / model_slug(model) / safe_name(name, "derived model")


# -------------------------------------------------------------------------------------- scratch
def staging_dir(root: str | Path = ".") -> Path:
    """Where a stage writes a folder before it is moved into place (git-ignored)."""
    return Path(root) / ".cache" / "pipeline-staging"


def artifact_name(model: str, behavior: str, method: str = "bipo") -> str:
    """DVC's registry name for a vector (letters, digits and ``-``): ``<model folder>-<behavior>[-<method>]``."""
    raw = f"{model_slug(model)}-{behavior}" + ("" if method == "bipo" else f"-{method}")
    return re.sub(r"-{3,}", "--", re.sub(r"[^A-Za-z0-9-]", "-", raw)).strip("-")


def provenance_path(pairs_file: str | Path) -> Path:
    """Where a generated pairs file's provenance goes: ``pirate.jsonl`` → ``pirate.generation.json`` beside it."""
    p = Path(pairs_file)
    return p.with_name(p.name.removesuffix(".jsonl") + ".generation.json")
