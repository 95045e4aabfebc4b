"""DP item-kNN: cosine neighbours from one user-level differentially private co-occurrence release.

The release (`dp.release.release_gram`, fitted by `dp.gram.PrivateGramRecommender`) is DP item
selection composed with one noisy symmetric item-item matrix on the selected items, calibrated
together by dp-accounting's PLD accountant and recorded once in the ledger:

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

from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrec.models.base import register
from privrec.models.dp.gram import PrivateGramConfig, PrivateGramRecommender
from privrec.models.dp.release import GramRelease
from privrec.models.itemknn import cosine_topk


class DPItemKNNConfig(PrivateGramConfig):
    """DP item-kNN settings (plus those of `PrivateGramConfig`).

    Attributes:
        window: None (whole-history co-occurrence) or the largest event distance of a pair.
        threshold: entries below this many noise standard deviations are dropped.
        k: neighbours kept per item.
        shrink: added to the cosine denominator.
        similarity: "cosine" or "cooccurrence" (the denoised co-occurrence itself, unnormalised:
            noisy norms of rare items can inflate their cosines).
    """

    window: int | None = Field(default=None, ge=1)
    threshold: float = Field(default=0.0, ge=0.0)
    k: int = Field(default=100, ge=1)
    shrink: float = Field(default=0.0, ge=0.0)
    similarity: str = Field(default="cosine", pattern="^(cosine|cooccurrence)$")


@register
class DPItemKNN(PrivateGramRecommender):
    """User-level DP item-kNN (see the module docstring)."""

    name = "dp_itemknn"
    Config = DPItemKNNConfig
    config: DPItemKNNConfig

    def __init__(self, config: DPItemKNNConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)  # on the selected items
        self._sim_t = self.similarity

    def _window(self) -> int | None:
        return self.config.window

    def _fit_released(self, rel: GramRelease, private: bool) -> None:
        """Threshold and clip the released matrix, then cosine neighbours."""
        c = self.config
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
            # unit norms: the cosine formula then keeps the raw values (/ (1 + shrink))
            sq = np.ones(m)
        g[np.diag_indices(m)] = sq
        self.similarity = cosine_topk(sp.csr_matrix(g), c.k, c.shrink)
        self._sim_t = self.similarity.T.tocsr()

    def selected_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """Sum of similarities to the history: scores of the selected items (`selected` order)."""
        h = self._history_input(histories)
        return np.asarray((h[:, self.selected] @ self._sim_t).todense(), dtype=np.float64)

    def _weights_to(self, pos: int) -> np.ndarray:
        return np.asarray(self.similarity[pos].todense()).ravel()

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
        self._read_marker(meta)

    def _meta(self) -> dict[str, Any]:
        return {"noise_std": self.noise_std, **self._marker_meta()}
