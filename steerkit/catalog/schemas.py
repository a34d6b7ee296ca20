"""JSON Schemas of the files downstream applications read: a catalog entry, a release event, a gate report.

Each schema is generated from the type that writes the file (``CatalogEntry``, ``Release``,
``GateReport``) with pydantic, carries the file format's version in its ``$id``, and ships with the
package (``steerkit/schemas/``) and in ``docs/schemas/``; a test fails when a type and its shipped
schema disagree. ``validate`` checks a document against the shipped schema (``jsonschema``): the
catalog build validates every entry it writes.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..eval.gate import GATE_FORMAT_VERSION, GateReport
from . import index, releases

SHIPPED = Path(__file__).resolve().parents[1] / "schemas"
BASE_ID = "https://steerkit.dev/schemas"
#: name → (the type that writes it, its format version, what it is)
TYPES: dict[str, tuple[Any, int, str]] = {
    "catalog-entry": (index.CatalogEntry, index.FORMAT_VERSION, "one entry of vectors/catalog.json"),
    "release-event": (releases.Release, releases.FORMAT_VERSION, "one event of vectors/releases.json"),
    "gate-report": (GateReport, GATE_FORMAT_VERSION, "reports/gate/<model>/<behavior>.json"),
}


class SchemaError(DataError):
    """A document does not match its JSON Schema."""


def file_name(name: str) -> str:
    return f"{name}.v{TYPES[name][1]}.schema.json"


def generate(name: str) -> dict[str, Any]:
    """The JSON Schema of ``name``, from its type."""
    from pydantic import TypeAdapter

    kind, version, what = TYPES[name]
    schema = TypeAdapter(kind).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_ID}/{file_name(name)}",
        "title": f"steerkit {name} (format version {version})",
        **{k: v for k, v in schema.items() if k != "title"},
        "description": f"{what}. " + str(schema.get("description", "")).strip(),
    }


def text(name: str) -> str:
    """The schema file's text (sorted keys, two-space indent, a final newline)."""
    return json.dumps(generate(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(folder: str | Path) -> list[Path]:
    """Write every schema into ``folder`` (``steerkit catalog schemas --out``)."""
    from ..fileio import atomic_write_text

    return [atomic_write_text(Path(folder) / file_name(n), text(n)) for n in TYPES]


@cache
def shipped(name: str) -> dict[str, Any]:
    return json.loads((SHIPPED / file_name(name)).read_text(encoding="utf-8"))


def validate(name: str, document: Any, where: str) -> None:
    """Raise a SchemaError naming the first place ``document`` breaks the shipped schema of ``name``."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(shipped(name)).iter_errors(document))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(the document)"
        raise SchemaError(
            f"does not match the {name} schema v{TYPES[name][1]} at {at}: {error.message}",
            where=where,
            fix="a writer and its schema disagree: report it (a test holds them equal)",
        )
