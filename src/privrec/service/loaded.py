"""A model version loaded for serving: the artifact, its compiled catalogue and item index."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from privrec.data.catalogue import ItemTable
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.base import Recommender
from privrec.service.history import HistoryIndex
from privrec.service.registry import ModelRegistry

_READ_CHUNK = 8 << 20


@dataclass
class LoadedModel:
    """A model version ready to serve: the artifact, its compiled catalogue and item index."""

    name: str
    version: str
    model: Recommender
    items: Vocabulary
    table: ItemTable
    index: dict[str, int]
    pop_ranking: np.ndarray
    load_seconds: float
    # items deleted from the catalogue: never in a list, whatever a model or release scores
    hidden: np.ndarray | None = None
    _titles: list[str] | None = field(default=None, repr=False)
    _static: list[dict[str, Any] | None] | None = field(default=None, repr=False)

    def item_dict(
        self, i: int, score: float | None = None, explanation: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Public facts of item `i` (plus its score and explanation) as JSON-ready data."""
        if self._static is None:
            self._static = [None] * self.table.n_items
        base = self._static[i]
        if base is None:
            t = self.table
            price = float(t.price[i])
            base = self._static[i] = {
                "item": t.keys[i],
                "title": t.titles[i] or None,
                "category": t.category_name(i),
                "price": price if np.isfinite(price) else None,
                "in_stock": bool(t.in_stock[i]),
            }
            images = t.extras.get("image_url")
            if isinstance(images, list) and images[i]:
                base["image_url"] = images[i]
        d = dict(base)
        if score is not None:
            d["score"] = round(float(score), 6)
        if explanation is not None:
            d["explanation"] = explanation
        return d

    def title_match(self, query: str) -> np.ndarray:
        """Substring match of the query's words: 0 no match, 1 all words, 1.5 the whole phrase."""
        if self._titles is None:
            t = self.table
            self._titles = [
                f"{t.titles[i]} {t.category_name(i) or ''}".lower() for i in range(t.n_items)
            ]
        q = " ".join(query.lower().split())
        words = q.split()
        out = np.zeros(len(self._titles), np.float32)
        for i, title in enumerate(self._titles):
            if all(w in title for w in words):
                out[i] = 1.5 if q in title else 1.0
        return out


def load_version(
    registry: ModelRegistry,
    name: str,
    version: str,
    catalogue: pd.DataFrame,
    history: HistoryIndex,
    deleted: Collection[str] = (),
) -> LoadedModel:
    """Load a saved version with its catalogue compiled (popularity from `history`); items in
    `deleted` (removed from the catalogue) are hidden from every list."""
    t0 = time.perf_counter()
    path = registry.path(name, version)
    # Read the artifact once in chunks first (file reads release the GIL): the loader then
    # copies from the page cache instead of holding the GIL through the disk reads, so
    # requests keep flowing while a large model (EASE: about 1 GB) loads for a hot swap.
    buf = bytearray(_READ_CHUNK)
    for f in path.glob("*.safetensors*"):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                time.sleep(0)
    model, items = registry.load(name, version)
    table, hidden = compile_catalogue(items, catalogue, history.popularity_for(items.keys), deleted)
    return LoadedModel(
        name=name,
        version=version,
        model=model,
        items=items,
        table=table,
        index={k: i for i, k in enumerate(items.keys)},
        pop_ranking=table.popularity_ranking(),
        load_seconds=round(time.perf_counter() - t0, 3),
        hidden=hidden,
    )


def compile_catalogue(
    items: Vocabulary,
    catalogue: pd.DataFrame,
    popularity: np.ndarray,
    deleted: Collection[str] = (),
) -> tuple[ItemTable, np.ndarray | None]:
    """A version's catalogue compiled from the store, and the mask of its deleted items.

    A deleted item is also out of stock and last by popularity, so even a list that skipped
    the mask would not show it first.
    """
    meta = InteractionDataset._align_meta(items, catalogue)
    table = ItemTable.from_meta(meta, popularity=popularity)
    if "image_url" in meta and meta["image_url"].notna().any():
        table.extras["image_url"] = [
            v if isinstance(v, str) and v else None for v in meta["image_url"].tolist()
        ]
    index = items.keys
    gone = set(deleted)
    if not gone:
        return table, None
    hidden = np.fromiter((k in gone for k in index), dtype=bool, count=len(index))
    if not hidden.any():
        return table, None
    table.in_stock[hidden] = False
    table.popularity[hidden] = -np.inf
    return table, hidden
