"""DP item-kNN: cosine neighbours from one user-level differentially private co-occurrence release.

The release (`dp_popularity.release_gram`) is DP item selection composed with one noisy
symmetric item-item matrix on the selected items, calibrated together by dp-accounting's PLD
accountant and recorded once in the ledger:

- `window=None`: the Gram matrix of unit-norm user rows (co-occurrence anywhere in the history);
- `window=w`: co-occurrence of items at most w events apart in the user's sequence, each user's
  distinct pairs weighted 1 / sqrt(their number) (more weight per pair than the whole-history
  Gram, and the pairs that predict a next purchase best).

Post-processing: entries below `threshold` noise standard deviations are set to 0 (most of the
noise is there), cosine similarity with the noisy diagonal (whole history) or the noisy
selection counts (window) as squared norms, plus `shrink`; each item keeps its `k` most similar
items. Scores sum the similarities over the user's history ("sum" formula of `itemknn`); items
outside the selection rank below, by noisy popularity, which also breaks ties.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, history_explanation, register, seed_from
from privrec.models.dp_ease import choose_top_items
from privrec.models.dp_popularity import (
    active_users,
    release_gram,
    resolve_delta,
    selected_above_rest,
)
from privrec.models.itemknn import cosine_topk
from privrec.privacy.dp import Release
from privrec.privacy.ledger import PrivacyLedger


class DPItemKNNConfig(InputConfig):
    """DP item-kNN settings.

    Attributes:
        epsilon: user-level privacy budget of the one release (inf: no noise, no guarantee).
        delta: None means 1 / (10 x number of users).
        top_items: items kept by DP selection; None: automatic (as DP EASE), all at epsilon inf.
        max_items_auto: upper bound of the automatic choice.
        selection_share: share of the budget spent on the selection.
        window: None (whole-history co-occurrence) or the largest event distance of a pair.
        threshold: entries below this many noise standard deviations are dropped.
        k: neighbours kept per item.
        shrink: added to the cosine denominator.
        similarity: "cosine" or "cooccurrence" (the denoised co-occurrence itself, unnormalised:
            noisy norms of rare items can inflate their cosines).
        seed: seeds the noise; `fit(rng=...)` overrides it.
        binary: 0/1 rows (True) or event weights (False) before the unit-norm scaling.
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    top_items: int | None = Field(default=None, ge=1)
    max_items_auto: int = Field(default=2000, ge=10)
    selection_share: float = Field(default=0.1, gt=0.0, lt=1.0)
    window: int | None = Field(default=None, ge=1)
    threshold: float = Field(default=0.0, ge=0.0)
    k: int = Field(default=100, ge=1)
    shrink: float = Field(default=0.0, ge=0.0)
    similarity: str = Field(default="cosine", pattern="^(cosine|cooccurrence)$")
    seed: int = DEFAULT_SEED
    binary: bool = True


@register
class DPItemKNN(Recommender):
    """User-level DP item-kNN (see the module docstring)."""

    name = "dp_itemknn"
    Config = DPItemKNNConfig
    config: DPItemKNNConfig

    def __init__(self, config: DPItemKNNConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.selected = np.zeros(0, np.int64)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)  # on the selected items
        self._sim_t = self.similarity
        self.popularity = np.zeros(0, np.float32)
        self.noise_std = 0.0
        self.noisy_gram: np.ndarray | None = None  # the released matrix (kept in memory only)
        self.release: Release | None = None  # what the ledger recorded (in memory only)

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> DPItemKNN:
        """One DP release (recorded in `ledger` before noise is drawn), then neighbours."""
        c = self.config
        x = self.input_matrix(dataset).astype(np.float64)
        n_users = active_users(x)
        delta = resolve_delta(c.delta, n_users)
        private = not math.isinf(c.epsilon)
        top = choose_top_items(
            c.top_items,
            epsilon=c.epsilon,
            delta=delta,
            selection_share=c.selection_share,
            n_users=n_users,
            n_items=dataset.n_items,
            cap=c.max_items_auto,
        )
        gen = np.random.default_rng(seed_from(rng, c.seed))
        rel = release_gram(
            dataset,
            x,
            model=self.name,
            epsilon=c.epsilon,
            delta=delta,
            top_items=top,
            selection_share=c.selection_share,
            gen=gen,
            ledger=ledger,
            window=c.window,
        )
        self.noisy_gram = rel.gram
        self.noise_std = rel.noise_std
        self.selected = rel.selected
        self.popularity = np.maximum(rel.counts, 0.0).astype(np.float32)
        g = rel.gram.copy()
        m = g.shape[0]
        # squared norms: the Gram diagonal, or the (noisy) selection counts for window pairs
        if c.window:
            sq = np.maximum(rel.counts[rel.selected], 0.0)
        else:
            sq = np.diag(g).copy()
        floor = max(rel.noise_std, 1e-12) if private else 0.0
        sq = np.maximum(sq, floor)
        off = ~np.eye(m, dtype=bool)
        if private and c.threshold > 0:
            g[off & (g < c.threshold * rel.noise_std)] = 0.0
        g[g < 0] = 0.0  # co-occurrences are never negative (post-processing)
        if c.similarity == "cooccurrence":
            sq = np.ones(
                m
            )  # unit norms: the cosine formula then keeps the raw values (/ (1 + shrink))
        g[np.diag_indices(m)] = sq
        self.similarity = cosine_topk(sp.csr_matrix(g), c.k, c.shrink)
        self._sim_t = self.similarity.T.tocsr()
        self.privacy = rel.release.guarantee() if private else None
        self.release = rel.release if private else None
        self._mark_fitted(dataset.n_items)
        return self

    def _prior(self) -> np.ndarray:
        top = float(self.popularity.max()) if self.popularity.size else 0.0
        return (self.popularity / top if top > 0 else self.popularity).astype(np.float64)

    def selected_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """Sum of similarities to the history: scores of the selected items only (`selected` order)."""
        h = self._history_input(histories)
        return np.asarray((h[:, self.selected] @ self._sim_t).todense(), dtype=np.float64)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """Sum of similarities to the history (selected items); the others below, by popularity."""
        return selected_above_rest(
            self.selected_scores(histories), self.selected, self._prior(), self.n_items
        )

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """History items ranked by their similarity to `item` (both selected), else "popular"."""
        self._check_fitted()
        pos = np.searchsorted(self.selected, int(item))
        if pos >= self.selected.size or self.selected[pos] != int(item):
            return Explanation(item=int(item), kind="popular", text="popular")
        h = self._history_input(self.history_matrix([history]))
        items = h.indices.astype(np.int64)
        loc = np.searchsorted(self.selected, items)
        ok = (loc < self.selected.size) & (
            self.selected[np.minimum(loc, self.selected.size - 1)] == items
        )
        row = np.asarray(self.similarity[pos].todense()).ravel()
        contrib = np.zeros(items.size)
        contrib[ok] = h.data[ok].astype(np.float64) * row[loc[ok]]
        return history_explanation(history, int(item), items, contrib)

    def _state(self) -> dict[str, np.ndarray]:
        s = self.similarity
        return {
            "selected": self.selected,
            "popularity": self.popularity,
            "sim_data": s.data,
            "sim_indices": s.indices.astype(np.int32),
            "sim_indptr": s.indptr.astype(np.int64),
        }

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.selected = arrays["selected"].astype(np.int64)
        self.popularity = arrays["popularity"].astype(np.float32)
        m = self.selected.size
        self.similarity = sp.csr_matrix(
            (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]),
            shape=(m, m),
            dtype=np.float32,
        )
        self._sim_t = self.similarity.T.tocsr()
        self.noise_std = float(meta.get("noise_std", 0.0))

    def _meta(self) -> dict[str, Any]:
        return {"noise_std": self.noise_std}
