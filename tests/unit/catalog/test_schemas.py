"""The JSON Schemas applications rely on: generated from the types that write the files, shipped with the
package and in docs/, and enforced (a writer that strays from its schema fails)."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from steerkit.catalog import schemas
from steerkit.catalog.index import CatalogEntry

from ...conftest import REPO


@pytest.mark.parametrize("name", list(schemas.TYPES))
def test_shipped_schemas_are_what_the_types_generate(name):
    shipped = (schemas.SHIPPED / schemas.file_name(name)).read_text(encoding="utf-8")
    assert shipped == schemas.text(name), "run `steerkit catalog schemas --out steerkit/schemas` (and docs/schemas)"
    assert (REPO / "docs" / "schemas" / schemas.file_name(name)).read_text(encoding="utf-8") == shipped
    assert schemas.shipped(name)["$id"].endswith(f".v{schemas.TYPES[name][1]}.schema.json")


def test_a_document_that_strays_is_refused_with_where():
    entry = asdict(CatalogEntry("b", "bipo", "m", [3], 8, "vectors/m/b/L3.safetensors", "a" * 64))
    schemas.validate("catalog-entry", entry, "here")
    with pytest.raises(schemas.SchemaError, match=r"at layers/0: 'three' is not of type 'integer'") as err:
        schemas.validate("catalog-entry", {**entry, "layers": ["three"]}, "vectors/catalog.json: entries[0]")
    assert err.value.where == "vectors/catalog.json: entries[0]"
    with pytest.raises(schemas.SchemaError, match="channel"):
        schemas.validate("catalog-entry", {**entry, "channel": "beta"}, "here")
    with pytest.raises(schemas.SchemaError, match="is a required property"):
        schemas.validate("gate-report", {"kind": "gate", "decision": "promote"}, "reports/gate/m/b.json")
