"""Popularity: the most popular items overall, or per category blended with overall.

Global popularity of item i: the sum over users of the user's strongest (weighted, optionally
time-decayed) event on i, so one user counts at most once per item however often they click.

Per category (`by_category=True`) the score of item i in category c for a user is

    score(i) = (1 - category_weight) * g(i) + category_weight * share_u(c) * p_c(i)

where g(i) is the global popularity divided by the largest one (so in [0, 1]), p_c(i) is i's
popularity divided by the largest popularity within c, and share_u(c) is the fraction of the
user's history weight that falls in c. A user with no history (or no categorised items) gets
the global ranking; a user who only buys nail polish gets the popular nail polishes first. Items
without a category only get the global part. The category of an item is `item_meta.category`,
optionally cut to its first `category_depth` levels of a path such as "Beauty > Makeup > Nails".
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from privrec.core.errors import ConfigError
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, register
from privrec.models.unlearning import UnlearningResult, nothing_removed

if TYPE_CHECKING:
    from privrec.privacy.ledger import PrivacyLedger

_DAY = 86400.0


class PopularityConfig(InputConfig):
    """Popularity settings.

    Attributes:
        binary: count users (True) instead of summing their event weights (False).
        half_life_days: events lose half their weight every this many days before the newest
            event in the data (None: no decay).
        by_category: blend global popularity with popularity in the user's categories.
        category_weight: the weight of the per-category part, in [0, 1].
        category_depth: keep only the first levels of a category path (None: the whole string).
        category_separator: separator of category path levels.
    """

    binary: bool = False
    half_life_days: float | None = Field(default=None, gt=0)
    by_category: bool = False
    category_weight: float = Field(default=0.8, ge=0.0, le=1.0)
    category_depth: int | None = Field(default=None, ge=1)
    category_separator: str = ">"


@register
class Popularity(Recommender):
    """Most popular items, globally or per category (see the module docstring for the formula)."""

    name = "popularity"
    Config = PopularityConfig
    config: PopularityConfig

    def __init__(self, config: PopularityConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.popularity = np.zeros(0, np.float32)  # raw global popularity per item
        self.item_category = np.zeros(0, np.int32)  # category index per item, -1 when none
        self.categories: list[str] = []

    # ---- training --------------------------------------------------------------------------
    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> Popularity:
        """Count (weighted, decayed) users per item; `rng` and `ledger` are unused (exact
        counts, no DP release)."""
        c = self.config
        n = dataset.n_items
        pop: np.ndarray
        if c.half_life_days is None:
            x = self.input_matrix(dataset)
            pop = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
        else:
            w = (
                np.ones(dataset.n_events, np.float64)
                if c.binary
                else dataset.event_weight_array(c.event_weights, use_ratings=c.use_ratings).astype(
                    np.float64
                )
            )
            if dataset.n_events:
                age_days = (dataset.ts.max() - dataset.ts) / _DAY
                w = w * np.exp2(-age_days / c.half_life_days)
            key = dataset.user_idx.astype(np.int64) * n + dataset.item_idx
            per_pair = pd.DataFrame({"k": key, "w": w}).groupby("k", sort=False)["w"]
            agg = per_pair.sum() if c.aggregate == "sum" else per_pair.max()
            pop = np.bincount(
                (agg.index.to_numpy() % n).astype(np.int64), weights=agg.to_numpy(), minlength=n
            )
        self.popularity = pop.astype(np.float32)
        self.item_category, self.categories = self._categories(dataset)
        self._mark_fitted(n)
        return self

    def _categories(self, dataset: InteractionDataset) -> tuple[np.ndarray, list[str]]:
        c = self.config
        n = dataset.n_items
        if not c.by_category or "category" not in dataset.item_meta:
            return np.full(n, -1, np.int32), []
        names: list[str | None] = []
        for v in dataset.item_meta["category"].tolist():
            if not isinstance(v, str) or not v.strip():
                names.append(None)
                continue
            if c.category_depth is not None:
                v = c.category_separator.join(
                    p.strip() for p in v.split(c.category_separator)[: c.category_depth]
                )
            names.append(v.strip())
        cats = sorted({v for v in names if v is not None})
        index = {v: i for i, v in enumerate(cats)}
        return np.array([index[v] if v is not None else -1 for v in names], dtype=np.int32), cats

    # ---- scoring ---------------------------------------------------------------------------
    def _global(self) -> np.ndarray:
        top = float(self.popularity.max()) if self.popularity.size else 0.0
        return (self.popularity / top if top > 0 else self.popularity).astype(np.float32)

    def _within_category(self) -> np.ndarray:
        """Each item's popularity divided by the largest in its category (0 without category)."""
        cat = self.item_category
        has = cat >= 0
        out = np.zeros(self.n_items, np.float32)
        if not has.any():
            return out
        top = np.zeros(len(self.categories), np.float64)
        np.maximum.at(top, cat[has], self.popularity[has].astype(np.float64))
        denom = top[cat[has]]
        out[has] = np.where(denom > 0, self.popularity[has] / np.where(denom > 0, denom, 1.0), 0.0)
        return out

    def _category_shares(self, h: sp.csr_matrix) -> np.ndarray:
        """Per user (row of h), the fraction of their history weight in each category."""
        cat = self.item_category
        has = np.nonzero(cat >= 0)[0]
        onehot = sp.csr_matrix(
            (np.ones(len(has), np.float32), (has, cat[has])),
            shape=(self.n_items, len(self.categories)),
        )
        per_cat = np.asarray((h @ onehot).todense(), dtype=np.float64)
        total = np.asarray(h.sum(axis=1), dtype=np.float64)
        return (per_cat / np.where(total > 0, total, 1.0)).astype(np.float32)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """Global popularity for every row, plus the per-category part when `by_category`."""
        h = self._history_input(histories)
        g = self._global()
        if not (self.config.by_category and self.categories):
            return np.broadcast_to(g, (h.shape[0], self.n_items)).copy()
        beta = np.float32(self.config.category_weight)
        share = self._category_shares(h)
        cat = self.item_category
        item_share = np.zeros((h.shape[0], self.n_items), np.float32)
        has = cat >= 0
        item_share[:, has] = share[:, cat[has]]
        return (
            (1 - beta) * g[None, :] + beta * item_share * self._within_category()[None, :]
        ).astype(np.float32)

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """ "popular in <category>" when the category part counts for this user, else "popular"."""
        self._check_fitted()
        item = int(item)
        cat = int(self.item_category[item]) if 0 <= item < self.n_items else -1
        if self.config.by_category and cat >= 0 and len(history):
            h = self.history_matrix([history])
            share = self._category_shares(self._history_input(h))[0, cat]
            if share > 0:
                own = [
                    int(i)
                    for i in np.unique(history.items)
                    if 0 <= i < self.n_items and self.item_category[i] == cat
                ]
                return Explanation(
                    item=item,
                    kind="popular",
                    text=f"popular in {self.categories[cat]}",
                    contributors=[(i, float(share)) for i in own[:3]],
                )
        return Explanation(item=item, kind="popular", text="popular")

    # ---- exact unlearning ------------------------------------------------------------------
    @property
    def can_forget(self) -> bool:
        """True without time decay (decayed weights depend on the newest event in the data).

        A subclass that fits differently (a DP release adds noise, and subtracting exact counts
        from it would publish them) does not inherit this: it must say so itself.
        """
        return type(self).fit is Popularity.fit and self.config.half_life_days is None

    def forget(self, removed: InteractionDataset) -> UnlearningResult:
        """popularity -= the removed users' input rows (see `Recommender.forget`)."""
        t0 = time.perf_counter()
        if not self.can_forget and self.config.half_life_days is not None:
            raise ConfigError(
                f"{self.name}: exact unlearning needs half_life_days=None (decayed weights "
                "depend on the newest event in the data); retrain instead"
            )
        if not self.can_forget:
            return super().forget(removed)
        x = self.removed_rows(removed)
        contrib = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
        touched = np.nonzero(contrib)[0]
        if not touched.size:
            return nothing_removed(self.name, x.shape[0], t0)
        pop = self.popularity.astype(np.float64)
        pop[touched] -= contrib[touched]
        self.popularity = pop.astype(np.float32)
        return UnlearningResult(
            self.name,
            x.shape[0],
            int(touched.size),
            time.perf_counter() - t0,
            "exact: counts downdated",
        )

    # ---- persistence -----------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity, "item_category": self.item_category}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.popularity = arrays["popularity"].astype(np.float32)
        self.item_category = arrays["item_category"].astype(np.int32)
        self.categories = list(meta.get("categories", []))

    def _meta(self) -> dict[str, Any]:
        # category names are public catalogue data, never personal data
        return {"categories": self.categories}
