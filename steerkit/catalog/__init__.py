"""The vector catalog (``vectors/catalog.json``): ``index`` reads it (open, find, load), ``build`` writes it."""

from .index import (
    AmbiguousEntryError,
    Catalog,
    CatalogEntry,
    CatalogError,
    NotInCatalogError,
)

__all__ = ["AmbiguousEntryError", "Catalog", "CatalogEntry", "CatalogError", "NotInCatalogError"]
