"""Business rules on top of a model's scores (layer 4, pure numpy).

A model ranks every item; the shop then says what may be shown: never what the shopper already
bought, never the items on an exclude list, only some categories (or not these), only items in
stock, only a price range; and it wants variety: maximal marginal relevance (MMR, Carbonell &
Goldstein 1998) and at most N items per category. `apply_rules` does all of it and still returns
k items whenever the catalogue holds k allowed ones: items the model gives no signal about are
ranked by popularity behind the scored ones, and a cap or MMR that cuts the candidate pool short
widens the pool until k items are found or the catalogue is exhausted.

`ItemTable` is the catalogue compiled once per served model (category codes, prices, stock,
popularity) so a request costs a few vectorised comparisons over the item arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from privrec.core.errors import ValidationError

__all__ = ["ItemTable", "RuleResult", "Rules", "apply_rules", "category_similarity", "fast_scores"]

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
        """Compile an item_meta frame (one row per item index: item, title, category, brand, price, in_stock)."""
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


@dataclass(frozen=True)
class Rules:
    """What a response may contain and how varied it must be.

    Attributes:
        exclude_items: item indices never to return.
        exclude_purchased: drop items the shopper bought (indices given to `apply_rules`).
        exclude_seen: drop every item in the shopper's history.
        include_categories: only these categories (path prefixes); empty means all.
        exclude_categories: never these categories (path prefixes).
        in_stock: only items not marked out of stock.
        price_min / price_max: price range; items without a price fail a price rule.
        diversity: MMR trade-off in [0, 1]: 0 is pure relevance, 1 maximal variety.
        category_cap: at most this many items per category (None: no cap).
    """

    exclude_items: tuple[int, ...] = ()
    exclude_purchased: bool = True
    exclude_seen: bool = True
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    in_stock: bool = False
    price_min: float | None = None
    price_max: float | None = None
    diversity: float = 0.0
    category_cap: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.diversity <= 1.0:
            raise ValidationError(
                "diversity",
                f"{self.diversity} is outside [0, 1]; 0 is pure relevance, 1 maximal variety",
            )
        if self.category_cap is not None and self.category_cap < 1:
            raise ValidationError("category_cap", "must be at least 1 (or absent for no cap)")
        for name, v in (("price_min", self.price_min), ("price_max", self.price_max)):
            if v is not None and (not np.isfinite(v) or v < 0):
                raise ValidationError(name, "must be a finite, non-negative price")
        if (
            self.price_min is not None
            and self.price_max is not None
            and self.price_min > self.price_max
        ):
            raise ValidationError("price_min", "is above price_max; swap them")

    @property
    def reorders(self) -> bool:
        """Whether the rules change the order of the allowed items (MMR or a cap)."""
        return self.diversity > 0 or self.category_cap is not None

    @property
    def filter_key(self) -> tuple[object, ...]:
        """The catalogue filters only (what `filter_mask` depends on)."""
        return (
            self.include_categories,
            self.exclude_categories,
            self.in_stock,
            self.price_min,
            self.price_max,
        )

    @property
    def has_filters(self) -> bool:
        """Whether any catalogue filter (category, stock, price) is set."""
        return bool(
            self.include_categories
            or self.exclude_categories
            or self.in_stock
            or self.price_min is not None
            or self.price_max is not None
        )

    def filter_mask(self, table: ItemTable) -> np.ndarray:
        """Boolean mask of the items the catalogue filters allow (cached per table; do not modify)."""
        key = self.filter_key
        hit = table._mask_cache.get(key)
        if hit is not None:
            return hit
        n = table.n_items
        mask = np.ones(n, dtype=bool)
        if self.include_categories:
            mask &= table.category_mask(self.include_categories)
        if self.exclude_categories:
            mask &= ~table.category_mask(self.exclude_categories)
        if self.in_stock:
            mask &= table.in_stock
        if self.price_min is not None or self.price_max is not None:
            p = table.price
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(p)
                if self.price_min is not None:
                    ok &= p >= self.price_min
                if self.price_max is not None:
                    ok &= p <= self.price_max
            mask &= ok
        if len(table._mask_cache) < 1024:
            table._mask_cache[key] = mask
        return mask

    def excluded(
        self, n: int, *, purchased: np.ndarray | None = None, seen: np.ndarray | None = None
    ) -> np.ndarray:
        """The in-range item indices excluded for this shopper (list, purchases, history)."""
        parts = [np.asarray(self.exclude_items, dtype=np.int64)]
        if self.exclude_purchased and purchased is not None:
            parts.append(np.asarray(purchased, dtype=np.int64))
        if self.exclude_seen and seen is not None:
            parts.append(np.asarray(seen, dtype=np.int64))
        a = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if not len(a):
            return a
        return a[(a >= 0) & (a < n)]

    def allowed(
        self,
        table: ItemTable,
        *,
        purchased: np.ndarray | None = None,
        seen: np.ndarray | None = None,
    ) -> np.ndarray:
        """Boolean mask of the items these rules allow for this shopper."""
        mask = (
            self.filter_mask(table).copy()
            if self.has_filters
            else np.ones(table.n_items, dtype=bool)
        )
        mask[self.excluded(table.n_items, purchased=purchased, seen=seen)] = False
        return mask


@dataclass(frozen=True)
class RuleResult:
    """Items chosen by `apply_rules`, best first.

    Attributes:
        items: item indices.
        scores: the model's score of each (for filled items: the model's score too, often 0).
        filled: True where the model gave no signal (score <= the floor) and the item was chosen by
            popularity to still return k items.
        allowed: how many items the rules allowed in the whole catalogue.
    """

    items: np.ndarray
    scores: np.ndarray
    filled: np.ndarray
    allowed: int


def category_similarity(table: ItemTable) -> Callable[[np.ndarray], np.ndarray]:
    """Item-item similarity for MMR from public catalogue data: same category 1.0, same top-level
    category 0.5, plus 0.25 for the same brand (capped at 1)."""

    def sim(idx: np.ndarray) -> np.ndarray:
        c = table.category[idx]
        t = table.top_category[idx]
        b = table.brand[idx]
        same_c = (c[:, None] == c[None, :]) & (c[:, None] >= 0)
        same_t = (t[:, None] == t[None, :]) & (t[:, None] >= 0)
        same_b = (b[:, None] == b[None, :]) & (b[:, None] >= 0)
        s = np.where(same_c, 1.0, np.where(same_t, 0.5, 0.0)) + 0.25 * same_b
        return np.minimum(s, 1.0)

    return sim


def _ranked(scores: np.ndarray, pop: np.ndarray, m: int) -> np.ndarray:
    """The m best finite-scored items: by score, then popularity, then index.

    A full argpartition over a large catalogue costs more than the rest of a request, so the
    candidates are cut first at the m-th largest score of a strided sample: at least m items
    reach that threshold, so every one of the true top m does too.
    """
    n = scores.shape[0]
    m = min(m, n)
    if m <= 0:
        return np.empty(0, np.int64)
    if n > 64 * m:
        sub = scores[:: max(1, n // (16 * m))]
        cut = np.partition(sub, len(sub) - m)[len(sub) - m]
        part = (
            np.flatnonzero(scores >= cut)
            if np.isfinite(cut)
            else np.flatnonzero(np.isfinite(scores))
        )
    else:
        part = np.flatnonzero(np.isfinite(scores))
    vals = scores[part]
    if len(part) > m:
        edge = np.partition(vals, len(vals) - m)[len(vals) - m]
        above = part[vals > edge]
        ties = part[vals == edge]
        need = m - len(above)
        if 0 < need < len(ties):
            # popularity decides among tied scores; keep every tie as popular as the weakest pick
            tp = pop[ties]
            floor_pop = np.partition(tp, len(tp) - need)[len(tp) - need]
            ties = ties[tp >= floor_pop]
        part = np.concatenate([above, ties])
        vals = scores[part]
    order = np.lexsort((part, -pop[part], -vals))
    return part[order][:m].astype(np.int64)


def _capped(cands: np.ndarray, table: ItemTable, cap: int, k: int) -> np.ndarray:
    counts: dict[int, int] = {}
    out = []
    for i in cands.tolist():
        c = int(table.category[i])
        if c >= 0:
            if counts.get(c, 0) >= cap:
                continue
            counts[c] = counts.get(c, 0) + 1
        out.append(i)
        if len(out) == k:
            break
    return np.asarray(out, dtype=np.int64)


def _mmr(
    cands: np.ndarray,
    rel: np.ndarray,
    lam: float,
    k: int,
    sim: Callable[[np.ndarray], np.ndarray],
    table: ItemTable,
    cap: int | None,
) -> np.ndarray:
    """Greedy MMR over `cands` (relevance `rel`, already in [0, 1]), honouring the cap."""
    s = sim(cands)
    chosen: list[int] = []
    max_sim = np.zeros(len(cands))
    free = np.ones(len(cands), dtype=bool)
    counts: dict[int, int] = {}
    while len(chosen) < k and free.any():
        val = (1.0 - lam) * rel - lam * max_sim
        val[~free] = -np.inf
        j = int(np.argmax(val))
        free[j] = False
        item = int(cands[j])
        if cap is not None:
            c = int(table.category[item])
            if c >= 0:
                if counts.get(c, 0) >= cap:
                    continue
                counts[c] = counts.get(c, 0) + 1
        chosen.append(j)
        max_sim = np.maximum(max_sim, s[j])
    return cands[np.asarray(chosen, dtype=np.int64)] if chosen else np.empty(0, np.int64)


def apply_rules(
    scores: np.ndarray,
    k: int,
    rules: Rules,
    table: ItemTable,
    *,
    purchased: np.ndarray | None = None,
    seen: np.ndarray | None = None,
    similarity: Callable[[np.ndarray], np.ndarray] | None = None,
    floor: float = 0.0,
    ranking: np.ndarray | None = None,
) -> RuleResult:
    """The top-k items of `scores` that the rules allow, varied as they ask.

    Args:
        scores: one score per item (higher is better; -inf never returned).
        k: how many items.
        rules: the rules.
        table: the compiled catalogue.
        purchased / seen: the shopper's purchased and seen item indices.
        similarity: item-item similarity for MMR (default: `category_similarity(table)`).
        floor: scores at or below this count as "no signal" (reported in `filled`).
        ranking: every item index, best first by (score, popularity, index), when `scores` is a
            fixed ranking such as popularity: then the top is read off it instead of searched.
    """
    if k < 1:
        raise ValidationError("k", f"{k} is out of range; ask for at least 1 item")
    s = np.array(
        scores,
        dtype=np.float64 if np.asarray(scores).dtype == np.float64 else np.float32,
        copy=True,
    )
    n = table.n_items
    if s.shape != (n,):
        raise ValueError(f"scores: has {s.shape} entries for {n} items")
    excl = rules.excluded(n, purchased=purchased, seen=seen)
    if rules.has_filters:
        s[~rules.filter_mask(table)] = -np.inf
    s[excl] = -np.inf
    finite = np.isfinite(s)
    n_allowed = int(np.count_nonzero(finite))
    if n_allowed < n:
        s[~finite] = -np.inf  # a model's NaN is never returned either
    k_eff = max(0, min(k, n_allowed))
    if not rules.reorders and ranking is not None:
        ok = finite[ranking]
        out = ranking[ok][:k_eff].astype(np.int64) if k_eff else np.empty(0, np.int64)
    elif not rules.reorders:
        out = _ranked(s, table.popularity, k_eff)
    else:
        sim = similarity or category_similarity(table)
        m = max(4 * k, 50)
        while True:
            cands = _ranked(s, table.popularity, m)
            if rules.diversity > 0:
                finite = s[cands]
                lo, hi = (
                    float(finite.min()) if len(finite) else 0.0,
                    float(finite.max()) if len(finite) else 0.0,
                )
                rel = (finite - lo) / (hi - lo) if hi > lo else np.ones(len(cands))
                # popularity breaks the ties among unscored items, as in the plain ranking
                rel = rel + 1e-6 * (len(cands) - np.arange(len(cands))) / max(len(cands), 1)
                out = _mmr(cands, rel, rules.diversity, k_eff, sim, table, rules.category_cap)
            else:
                out = _capped(cands, table, int(rules.category_cap or k), k_eff)
            if len(out) >= k_eff or len(cands) >= n_allowed:
                break
            m *= 4
    sc = scores[out] if len(out) else np.empty(0, np.float64)
    return RuleResult(
        items=out,
        scores=np.asarray(sc, dtype=np.float64),
        filled=np.asarray(sc <= floor, dtype=bool),
        allowed=n_allowed,
    )


def fast_scores(model: object, items: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """Scores of every item for one history, by the shortest route the model's structure allows.

    EASE: h B is the weighted sum of B's rows of the history items; item-kNN ("sum" formula):
    the weighted sum of the history items' neighbour rows. Both equal `model.score` on the same
    history (max weight per item; 1.0 when the model is binary). Returns None for other models,
    which the caller then asks through `model.score`.

    Args:
        model: a fitted Recommender.
        items: history item indices (any order, repeats allowed).
        weights: one weight per entry of `items`.
    """
    name = getattr(model, "name", "")
    n = int(getattr(model, "n_items", 0))
    it = np.asarray(items, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float32)
    ok = (it >= 0) & (it < n)
    it, w = it[ok], w[ok]
    if len(it) > 1:  # max weight per distinct item, as Recommender.history_matrix does
        order = np.lexsort((w, it))
        it, w = it[order], w[order]
        last = np.ones(len(it), dtype=bool)
        last[:-1] = it[1:] != it[:-1]
        it, w = it[last], w[last]
    config = getattr(model, "config", None)
    if getattr(config, "binary", False):
        w = np.ones_like(w)
    if name == "ease":
        # the rows of B one by one: cheaper than a gathered copy of all of them
        b = getattr(model, "weights", None)
        if not isinstance(b, np.ndarray) or b.ndim != 2:
            return None
        if not len(it):
            return np.zeros(n, np.float32)
        out = b[int(it[0])] * np.float32(w[0])
        for j, wj in zip(it[1:].tolist(), w[1:].tolist(), strict=True):
            out += b[j] * np.float32(wj) if wj != 1.0 else b[j]
        return out
    if name == "itemknn" and getattr(config, "formula", "sum") == "sum":
        st = getattr(model, "_sim_t", None)
        if st is None or not hasattr(st, "indptr"):
            return None
        if not len(it):
            return np.zeros(n, np.float32)
        starts = st.indptr[it]
        lens = st.indptr[it + 1] - starts
        total = int(lens.sum())
        if not total:
            return np.zeros(n, np.float32)
        # positions of every neighbour entry of the history rows, gathered in one go
        shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        pos = shift + np.arange(total)
        idx = st.indices[pos]
        vals = st.data[pos] * np.repeat(w, lens)
        return np.bincount(idx, weights=vals, minlength=n).astype(np.float32)
    return None
