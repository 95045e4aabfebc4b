"""The catalogue as arrays: public item facts compiled once per served model (layer 3).

`ItemTable` holds, per item index, the key, title, category and brand codes, price, stock and
popularity, so a request's business rules (`privrec.service.rules`) and explanations
(`privrec.explain`) cost a few vectorised comparisons over the item arrays. It holds public
catalogue data and item popularity only, never personal data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["ItemTable"]

_SEP = ">"


def _top_level(cat: str) -> str:
    return cat.split(_SEP, 1)[0].strip()


@dataclass(frozen=True)
class ItemTable:
    """Public catalogue facts per item index, as arrays.

    Attributes:
        keys: item key per index.
        titles: title per index ("" when unknown).
        category: category code per index (-1 when none); `categories[code]` is its path.
        top_category: code of the first path level per index (-1 when none); names in `tops`.
        brand: brand code per index (-1 when none).
        price: price per index (NaN when unknown).
        in_stock: False only where the catalogue says the item is out of stock.
        popularity: how many users touched each item (the tie-breaker and the fallback ranking).
    """

    keys: list[str]
    titles: list[str]
    category: np.ndarray
    categories: list[str]
    top_category: np.ndarray
    tops: list[str]
    brand: np.ndarray
    price: np.ndarray
    in_stock: np.ndarray
    popularity: np.ndarray
    _cat_lookup: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _mask_cache: dict[tuple[object, ...], np.ndarray] = field(default_factory=dict, repr=False)
    extras: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_meta(cls, meta: pd.DataFrame, popularity: np.ndarray | None = None) -> ItemTable:
        """Compile an item_meta frame.

        Args:
            meta: one row per item index: item, and optionally title, category, brand, price,
                in_stock.
            popularity: per item, how many users touched it (None: zeros).
        """
        n = len(meta)

        def text(col: str) -> list[str | None]:
            if col not in meta:
                return [None] * n
            return [
                v.strip() if isinstance(v, str) and v.strip() else None for v in meta[col].tolist()
            ]

        def codes(values: list[str | None]) -> tuple[np.ndarray, list[str]]:
            names = sorted({v for v in values if v is not None})
            index = {v: i for i, v in enumerate(names)}
            return np.array(
                [index[v] if v is not None else -1 for v in values], dtype=np.int32
            ), names

        cats = text("category")
        cat, categories = codes(cats)
        top, tops = codes([_top_level(c) if c else None for c in cats])
        brand, _ = codes(text("brand"))
        price = (
            pd.to_numeric(meta["price"], errors="coerce").to_numpy(np.float64)
            if "price" in meta
            else np.full(n, np.nan)
        )
        if "in_stock" in meta:
            stock = meta["in_stock"].astype("boolean").fillna(True).to_numpy(dtype=bool)
        else:
            stock = np.ones(n, dtype=bool)
        titles = [t or "" for t in text("title")]
        pop = (
            np.zeros(n, np.float64)
            if popularity is None
            else np.asarray(popularity, dtype=np.float64)
        )
        if pop.shape != (n,):
            raise ValueError(f"popularity: has {pop.shape[0]} entries for {n} items")
        return cls(
            keys=[str(k) for k in meta["item"].tolist()],
            titles=titles,
            category=cat,
            categories=categories,
            top_category=top,
            tops=tops,
            brand=brand,
            price=price,
            in_stock=stock,
            popularity=pop,
        )

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.keys)

    def popularity_ranking(self) -> np.ndarray:
        """Every item index, most popular first (ties: lower index first)."""
        return np.lexsort((np.arange(self.n_items), -self.popularity)).astype(np.int64)

    def category_name(self, i: int) -> str | None:
        """The category path of item `i`, or None."""
        c = int(self.category[int(i)])
        return self.categories[c] if c >= 0 else None

    def category_mask(self, names: Sequence[str]) -> np.ndarray:
        """Items whose category path equals a name or starts with it as a path prefix.

        "Beauty > Makeup" matches "Beauty > Makeup > Nails"; matching ignores case.
        """
        mask = np.zeros(self.n_items, dtype=bool)
        for name in names:
            key = " > ".join(p.strip() for p in str(name).lower().split(_SEP))
            hit = self._cat_lookup.get(key)
            if hit is None:
                codes = [
                    i
                    for i, c in enumerate(self.categories)
                    if (low := " > ".join(p.strip() for p in c.lower().split(_SEP))) == key
                    or low.startswith(key + " > ")
                ]
                hit = (
                    np.isin(self.category, np.asarray(codes, dtype=np.int32))
                    if codes
                    else np.zeros(self.n_items, bool)
                )
                if len(self._cat_lookup) < 4096:
                    self._cat_lookup[key] = hit
            mask |= hit
        return mask
