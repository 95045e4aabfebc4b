"""What DP hybrid and DP text-kNN share: public item text blended with one DP release.

Both score item i for a history h (the content component's weighted rows) as

    content_weight * cos(profile(h), e_i)          (public item text only, in [-1, 1])
  + cf_weight * s_i(h) / max_j |s_j(h)|           (the DP part's scores, each row scaled)
  + popularity_weight * pop_i                     (a prior from the release's noisy counts)

and explain an item by the part that contributes most to its score. What differs, the DP
part's scores and explanation and the popularity prior, is each model's (`_cf_scores`,
`_explain_cf`, `_popularity`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Protocol, cast

import numpy as np
import scipy.sparse as sp

from privrec.core.errors import ConfigError
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender
from privrec.models.content import ContentRecommender
from privrec.models.hybrid_components import components_state

__all__ = ["BlendWeights", "ContentDPBlend", "row_scaled"]


class BlendWeights(Protocol):
    """The blend's settings every such model's config has."""

    content_weight: float
    cf_weight: float
    popularity_weight: float


def row_scaled(s: np.ndarray) -> np.ndarray:
    """Each row divided by its largest absolute value (rows of zeros, or no columns, unchanged)."""
    top = np.abs(s).max(axis=1, keepdims=True) if s.shape[1] else np.ones((s.shape[0], 1))
    return s / np.where(top > 0, top, 1.0)


class ContentDPBlend(Recommender):
    """Base of the blends of a content component and one DP part (see the module docstring).

    Subclasses set `content` (a `ContentRecommender` on the bundled pretrained encoder) and
    implement `fit`, `_cf_scores`, `_explain_cf`, `_popularity` and their persistence.
    """

    content: ContentRecommender

    @property
    @abstractmethod
    def components(self) -> dict[str, Recommender]:
        """The components saved with the model (see `hybrid_components.components_state`)."""

    @abstractmethod
    def _cf_scores(self, h: sp.csr_matrix) -> np.ndarray:
        """The DP part's scores of every item for validated history rows `h`, `row_scaled`."""

    @abstractmethod
    def _explain_cf(self, history: UserHistory, item: int, h: sp.csr_matrix) -> Explanation:
        """The DP part's explanation (`h`: `history` as a history row)."""

    @abstractmethod
    def _popularity(self, weight: float) -> np.ndarray:
        """`weight` times the popularity prior of every item (from the release's noisy counts)."""

    # ---- history rows: the content component's (recency- and event-weighted) ---------------------
    def history_matrix(self, histories: list[UserHistory]) -> sp.csr_matrix:
        """History rows as the content component weighs them (the DP part only sees presence)."""
        return self.content.history_matrix(histories)

    def input_matrix(self, dataset: InteractionDataset) -> sp.csr_matrix:
        """Every user's history row as the content component weighs it."""
        return self.content.input_matrix(dataset)

    # ---- scoring ---------------------------------------------------------------------------------
    def _parts(self, histories: sp.csr_matrix) -> dict[str, np.ndarray]:
        h = self._history_input(histories)
        c = cast(BlendWeights, self.config)
        parts: dict[str, np.ndarray] = {}
        if c.content_weight:
            parts["content"] = c.content_weight * self.content.score_matrix(h).astype(np.float64)
        if c.cf_weight:
            parts["cf"] = c.cf_weight * self._cf_scores(h)
        if c.popularity_weight:
            parts["popularity"] = np.broadcast_to(
                self._popularity(c.popularity_weight), (h.shape[0], self.n_items)
            )
        return parts

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """The weighted blend of the three parts (see the module docstring)."""
        parts = self._parts(histories)
        if not parts:
            raise ConfigError(f"{self.name}: every weight is 0; give at least one positive weight")
        return sum(parts.values()).astype(np.float32)  # type: ignore[union-attr]

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """The explanation of the part that contributes most to the item's score."""
        self._check_fitted()
        h = self.history_matrix([history])
        parts = self._parts(h)
        best = max(parts, key=lambda n: float(parts[n][0, int(item)])) if parts else "popularity"
        if best == "content":
            return self.content.explain(history, int(item))
        if best == "cf":
            return self._explain_cf(history, int(item), h)
        return Explanation(item=int(item), kind="popular", text="popular")

    def _derived(self) -> dict[str, np.ndarray]:
        return components_state(self.components, derived=True)
