"""The one fit of the models built on the DP item-item release (DP item-kNN, DP EASE).

Both open the same way (delta from the configured `expected_users`, a secure noise source), make
the same single release (`release.release_gram`: an optional noisy user count and DP item
selection composed with one noisy item-item matrix, charged to the ledger before any noise) and
score the same way: their own scores on the selected items, every other item below them by noisy
popularity. A subclass only turns the released matrix into its weights (`_fit_released`) and
scores the selected items. Unit: one user; adjacency: add/remove one user.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, history_explanation
from privrec.models.dp.release import (
    DEFAULT_EXPECTED_USERS,
    DPArtifact,
    GramRelease,
    GramStatistics,
    PrivateFit,
    release_gram,
    selected_above_rest,
    start_private_fit,
    warn_unless_public_order,
)
from privrec.privacy.dp import Release
from privrec.privacy.ledger import PrivacyLedger


class PrivateGramConfig(InputConfig):
    """Settings of every model built on the DP item-item release.

    Attributes:
        epsilon: user-level privacy budget of the one release (inf: no noise, no guarantee).
        delta: None means 1 / (10 x expected_users).
        expected_users: public, configured number of users delta is set from (never counted).
        top_items: items kept by DP selection; None chooses n / (4 z) (n: a noisy user count
            charged with the release, z: the Gram noise multiplier) clipped to
            [50, max_items_auto]; at epsilon = inf every item.
        max_items_auto: upper bound of the automatic choice.
        selection_share: share of the budget spent on the selection.
        seed: seeds non-noise randomness only (the noise is never seeded; see `fit`).
        binary: 0/1 rows (True) or event weights (False) before the unit-norm scaling.
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    expected_users: int = Field(default=DEFAULT_EXPECTED_USERS, ge=1)
    top_items: int | None = Field(default=None, ge=1)
    max_items_auto: int = Field(default=2000, ge=10)
    selection_share: float = Field(default=0.1, gt=0.0, lt=1.0)
    seed: int = DEFAULT_SEED
    binary: bool = True


class PrivateGramRecommender(DPArtifact, Recommender):
    """Base of the models fitted from one DP item-item release (see the module docstring).

    Subclasses implement `_fit_released`, `selected_scores` and `_weights_to` (and persistence).
    """

    Config = PrivateGramConfig
    config: PrivateGramConfig

    def __init__(self, config: PrivateGramConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.selected = np.zeros(0, np.int64)
        self.popularity = np.zeros(0, np.float32)  # noisy selection counts (all items)
        self.noise_std = 0.0
        self.noisy_gram: np.ndarray | None = None  # the released matrix (kept in memory only)
        self.release: Release | None = None  # what the ledger recorded (in memory only)

    # ---- the one fit ------------------------------------------------------------------------
    def _window(self) -> int | None:
        """None: the Gram matrix of the whole history; w: co-occurrence at most w events apart."""
        return None

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> PrivateGramRecommender:
        """One DP release (recorded in `ledger` before noise is drawn), then post-processing.

        Args:
            dataset: the training interactions.
            rng: unused by the release (its noise is never seeded); kept for the contract.
            ledger: charged before any noise is drawn.
            noise_seed: tests and benchmarks only: reproducible noise, and then the model is no
                DP release (`privacy` None, saved with `"reproducible_noise": true`).
        """
        return self.fit_from_statistics(
            dataset, None, rng=rng, ledger=ledger, noise_seed=noise_seed
        )

    def fit_from_statistics(
        self,
        dataset: InteractionDataset,
        stats: GramStatistics | None,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> PrivateGramRecommender:
        """`fit` with the exact sums supplied by `stats` (e.g. reduced once from user shards).

        The release is the same: the ledger is charged first and the noise is added once, to
        the reduced sums (`release.release_gram`). `stats` None computes them in this process.
        """
        warn_unless_public_order(dataset, self.name)
        c = self.config
        x = self.input_matrix(dataset).astype(np.float64)
        run = start_private_fit(
            epsilon=c.epsilon,
            delta=c.delta,
            expected_users=c.expected_users,
            rng=rng,
            seed=c.seed,
            noise_seed=noise_seed,
        )
        rel = self._release(dataset, x, run, ledger, stats)
        self.noisy_gram = rel.gram
        self.noise_std = rel.noise_std
        self.selected = rel.selected
        self.popularity = np.maximum(rel.counts, 0.0).astype(np.float32)
        self._fit_released(rel, run.private)
        run.record(self, rel.release)
        self._mark_fitted(dataset.n_items)
        return self

    def _release(
        self,
        dataset: InteractionDataset,
        x: sp.csr_matrix,
        run: PrivateFit,
        ledger: PrivacyLedger | None,
        stats: GramStatistics | None,
    ) -> GramRelease:
        """The one DP release (`release.release_gram`); a subclass may bound rows differently."""
        c = self.config
        return release_gram(
            dataset,
            x,
            model=self.name,
            run=run,
            top_items=c.top_items,
            max_items_auto=c.max_items_auto,
            selection_share=c.selection_share,
            ledger=ledger,
            window=self._window(),
            stats=stats,
        )

    def _fit_released(self, rel: GramRelease, private: bool) -> None:
        """Turn the released matrix into the model's weights (post-processing only)."""
        raise NotImplementedError

    # ---- scoring ----------------------------------------------------------------------------
    def _prior(self) -> np.ndarray:
        top = float(self.popularity.max()) if self.popularity.size else 0.0
        return (self.popularity / top if top > 0 else self.popularity).astype(np.float64)

    def selected_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """Scores of the selected items only (columns in `selected` order), float64."""
        raise NotImplementedError

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """The model's scores on the selected items; the other items below, by noisy popularity."""
        return selected_above_rest(
            self.selected_scores(histories), self.selected, self._prior(), self.n_items
        )

    def _weights_to(self, pos: int) -> np.ndarray:
        """Weight of each selected item (in `selected` order) towards the selected item `pos`."""
        raise NotImplementedError

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """History items j ranked by h_j * weight(j -> item) (both selected), else "popular"."""
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
        weights = self._weights_to(int(pos))
        contrib = np.zeros(items.size)
        contrib[ok] = h.data[ok].astype(np.float64) * weights[loc[ok]]
        return history_explanation(history, int(item), items, contrib)
