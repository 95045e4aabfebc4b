"""The shop's product catalogue: import, upsert, patch and delete, seen by serving at once.

Rows are validated by `privrec.data.catalogue_import` (rejects name the line and the field,
never the value), written to the store's item table, and then every loaded model version's
compiled catalogue is rebuilt (`Serving.refresh_catalogue`) so the next request sees the new
titles, prices and stock.

A deleted item's row is emptied (and marked out of stock) and its id kept in the store's
metadata: the trained models still know the item, so serving keeps it out of lists instead of
forgetting it. That mask is applied by `Serving.refresh_catalogue`, i.e. after a catalogue
change in this process; a version loaded later (a restart, a new version) shows it again until
the next change, except under the in_stock rule.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.data.catalogue_import import (
    CATALOGUE_FIELDS,
    STORE_COLUMNS,
    CatalogueImport,
    read_catalogue,
    validate_records,
    validate_row,
)
from privrec.service.context import ServiceContext
from privrec.service.loaded import LoadedModel, compile_catalogue

__all__ = ["DELETED_META_KEY", "Catalogue", "recompiled"]

DELETED_META_KEY = "catalogue_deleted"
# a patch field -> the store column it sets
_PATCH_COLUMN = {
    "title": "title",
    "description": "text",
    "category": "category",
    "brand": "brand",
    "price": "price",
    "in_stock": "in_stock",
    "stock": "in_stock",
    "image_url": "image_url",
}


class RefreshesCatalogue(Protocol):
    """What a catalogue change needs of serving (`Serving` is one; no import cycle)."""

    def refresh_catalogue(self, deleted: Collection[str] = ()) -> list[str]:
        """Recompile the loaded catalogues, keeping `deleted` out of lists."""
        ...


class Catalogue:
    """Catalogue changes for one data directory.

    Args:
        ctx: the data directory's context (the store).
        serving: the serving state whose compiled catalogues follow each change.
    """

    def __init__(self, ctx: ServiceContext, serving: RefreshesCatalogue) -> None:
        self.ctx = ctx
        self.serving = serving

    # ---- reading ---------------------------------------------------------------------------
    def deleted(self) -> set[str]:
        """The ids of deleted items (kept out of lists until upserted again)."""
        raw = self.ctx.store.meta().get(DELETED_META_KEY)
        return set(json.loads(raw)) if raw else set()

    def _row(self, item: str) -> dict[str, Any]:
        items = self.ctx.store.items()
        hit = items[items["item"] == item]
        if not len(hit) or item in self.deleted():
            raise NotFoundError(f"item: {item!r} is not in the catalogue")
        return {str(k): v for k, v in hit.iloc[0].to_dict().items()}

    # ---- changes ---------------------------------------------------------------------------
    def import_file(self, path: str | Path) -> dict[str, Any]:
        """Validate and store a JSONL, CSV or Parquet catalogue; returns the report.

        The report has rows, accepted, rejected, rejects (line, field, reason), dropped_fields
        (validated fields the store cannot hold) and items_written.
        """
        return self._write(read_catalogue(path))

    def upsert(self, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Validate and store catalogue records (rejects numbered from 1); returns the report."""
        return self._write(validate_records(enumerate(records, start=1)))

    def patch(self, item: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Change some fields of a stored item (None clears a field); returns the item's row.

        Raises:
            NotFoundError: the item is not in the catalogue.
            ValidationError: a field is unknown, not patchable or invalid (named, no value).
        """
        if not fields:
            raise ValidationError("fields", "name at least one field to change")
        for name in fields:
            if name == "item":
                raise ValidationError("item", "cannot be changed; delete and upsert instead")
            if name not in CATALOGUE_FIELDS:
                raise ValidationError("fields", "holds an unknown field name")
        row = self._row(item)
        checked = validate_row({"item": item, **fields})
        for name in fields:
            col = _PATCH_COLUMN.get(name)
            if col is not None:
                row[col] = checked[col]
        frame = pd.DataFrame([row], columns=list(STORE_COLUMNS))
        self._store(frame)
        return _public(row)

    def delete(self, item: str) -> dict[str, Any]:
        """Delete an item: its row is emptied and it leaves every list at once.

        Raises:
            NotFoundError: the item is not in the catalogue.
        """
        self._row(item)
        # out of stock in the store too: a process that loads a model before the next
        # catalogue change (a restart, a new version) still drops it under the in_stock rule
        frame = pd.DataFrame([{"item": item, "in_stock": False}], columns=list(STORE_COLUMNS))
        self.ctx.store.upsert_items(_typed(frame))
        gone = self.deleted() | {item}
        self.ctx.store.set_meta(DELETED_META_KEY, json.dumps(sorted(gone)))
        self.serving.refresh_catalogue(gone)
        return {"item": item, "deleted": True}

    def _write(self, result: CatalogueImport) -> dict[str, Any]:
        written = self._store(result.frame) if len(result.frame) else 0
        return result.report(written)

    def _store(self, frame: pd.DataFrame) -> int:
        """Write rows, revive any that were deleted, and refresh serving."""
        n = int(self.ctx.store.upsert_items(_typed(frame)))
        gone = self.deleted()
        revived = gone & set(frame["item"].astype(str))
        if revived:
            gone -= revived
            self.ctx.store.set_meta(DELETED_META_KEY, json.dumps(sorted(gone)))
        self.serving.refresh_catalogue(gone)
        return n


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame.copy()
    f["price"] = pd.to_numeric(f["price"]).astype("float64")
    f["in_stock"] = f["in_stock"].astype("boolean")
    return f


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    """A store row as JSON-ready data (description for text, None for missing values)."""
    out: dict[str, Any] = {}
    for col in STORE_COLUMNS:
        v = row.get(col)
        if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            v = None
        elif isinstance(v, np.generic):
            v = v.item()
        out["description" if col == "text" else col] = v
    return out


def recompiled(
    old: LoadedModel, catalogue: pd.DataFrame, popularity: np.ndarray, deleted: Collection[str]
) -> LoadedModel:
    """`old` with its catalogue compiled again from `catalogue`; `deleted` items hidden.

    The serving path never lists a hidden item, whatever the model or a release scores it;
    it is also out of stock and last by popularity (see `loaded.compile_catalogue`).
    """
    table, hidden = compile_catalogue(old.items, catalogue, popularity, deleted)
    return dataclasses.replace(
        old,
        table=table,
        pop_ranking=table.popularity_ranking(),
        hidden=hidden,
        _titles=None,
        _static=None,
    )
