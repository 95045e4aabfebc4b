"""Business rules on top of a model's scores (service layer, pure numpy).

A model ranks every item; the shop then says what may be shown: never what the shopper already
bought, never the items on an exclude list, only some categories (or not these), only items in
stock, only a price range; it may pin items to the top of a list (a promotion: such an item is
explained as "placed by a shop rule", never by the shopper's history); and it wants variety:
maximal marginal relevance (MMR, Carbonell & Goldstein 1998) and at most N items per category.
`apply_rules` does all of it and still returns k items whenever the catalogue holds k allowed
ones: items the model gives no signal about are ranked by popularity behind the scored ones, and
a cap or MMR that cuts the candidate pool short widens the pool until k items are found or the
catalogue is exhausted.

The catalogue they read is `privrec.data.catalogue.ItemTable`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from privrec.core.errors import ValidationError
from privrec.data.catalogue import ItemTable

__all__ = ["RuleResult", "Rules", "apply_rules", "category_similarity"]


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
        pin_items: item indices placed first, in this order, where the other rules allow them
            (a pinned item is still dropped by a filter, an exclusion or the shopper's history).
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
    pin_items: tuple[int, ...] = ()

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
        """Boolean mask of the items the catalogue filters allow (cached per table: read-only)."""
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
        pinned: True where a pin rule placed the item (not the model's ranking); None: no pins.
    """

    items: np.ndarray
    scores: np.ndarray
    filled: np.ndarray
    allowed: int
    pinned: np.ndarray | None = None


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
    pins = _pins(rules.pin_items, finite, k)
    if len(pins):
        # placed by the rule: out of the model's ranking, which fills the places after them
        s[pins] = -np.inf
        finite = np.isfinite(s)
    k_eff = max(0, min(k, n_allowed) - len(pins))
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
            if len(out) >= k_eff or len(cands) >= n_allowed - len(pins):
                break
            m *= 4
    pinned = None
    if len(pins):
        out = np.concatenate([pins, out]).astype(np.int64)
        pinned = np.zeros(len(out), dtype=bool)
        pinned[: len(pins)] = True
    sc = scores[out] if len(out) else np.empty(0, np.float64)
    filled = np.asarray(sc <= floor, dtype=bool)
    if pinned is not None:
        filled &= ~pinned
    return RuleResult(
        items=out,
        scores=np.asarray(sc, dtype=np.float64),
        filled=filled,
        allowed=n_allowed,
        pinned=pinned,
    )


def _pins(pin_items: tuple[int, ...], allowed: np.ndarray, k: int) -> np.ndarray:
    """The pinned indices the other rules allow, first occurrence kept, at most k."""
    out: list[int] = []
    for i in pin_items:
        if 0 <= i < len(allowed) and allowed[i] and i not in out:
            out.append(int(i))
            if len(out) == k:
                break
    return np.asarray(out, dtype=np.int64)
