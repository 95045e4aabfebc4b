"""DP popularity: user-level differentially private item counts (the floor every model must beat).

Each user's contribution is bounded first: at most `max_items` distinct items per user (their
most recent ones), each counted with a weight in [0, `max_weight`] (1 for `binary=True`). One
user then changes the count vector by at most max_weight * sqrt(max_items) in L2, and Gaussian
noise of that many times the analytic-Gaussian multiplier for (epsilon, delta) is added to every
item's count (including items nobody touched, so the release does not reveal which items exist
in the data beyond the public catalogue). Everything after the noise (clipping at 0, category
blending with the public catalogue categories, ranking) is post-processing.

Unit: one user; adjacency: add/remove one user (the number of users is not read: delta comes from
the configured `expected_users`). The noise is fresh OS entropy (`privacy.noise`); `fit(...,
noise_seed=)` makes it reproducible for tests, and the model is then no DP release.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from privrec.core.rng import DEFAULT_SEED
from privrec.data.dataset import InteractionDataset
from privrec.models.base import register
from privrec.models.dp.release import (
    ACCOUNTANT,
    DEFAULT_EXPECTED_USERS,
    DPArtifact,
    most_recent_items,
    start_private_fit,
    warn_unless_public_order,
)
from privrec.models.popularity import Popularity, PopularityConfig
from privrec.privacy.dp import GaussianMechanism, Release, gaussian_sigma, gaussian_spec
from privrec.privacy.guarantee import ADJACENCY
from privrec.privacy.ledger import PrivacyLedger


# ---- the model -----------------------------------------------------------------------------------
class DPPopularityConfig(PopularityConfig):
    """DP popularity settings (plus everything of `PopularityConfig` except time decay).

    Attributes:
        epsilon: the user-level privacy budget of the release (inf: exact counts, no guarantee).
        delta: the failure probability; None means 1 / (10 x expected_users).
        expected_users: public, configured number of users delta is set from (never counted).
        max_items: each user's most recent distinct items that count (contribution bound).
        max_weight: each counted item's weight is clipped to [0, max_weight] (binary: weight 1).
        seed: kept for the contract; the noise is never seeded (see `fit`).
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    expected_users: int = Field(default=DEFAULT_EXPECTED_USERS, ge=1)
    max_items: int = Field(default=64, ge=1)
    max_weight: float = Field(default=1.0, gt=0.0)
    binary: bool = True
    seed: int = DEFAULT_SEED

    @model_validator(mode="after")
    def _no_decay(self) -> DPPopularityConfig:
        if self.half_life_days is not None:
            raise ValueError(
                "half_life_days: time decay is not supported by dp_popularity; leave it None"
            )
        return self


@register
class DPPopularity(DPArtifact, Popularity):
    """Popularity from user-level DP noisy counts (see the module docstring)."""

    name = "dp_popularity"
    Config = DPPopularityConfig
    config: DPPopularityConfig

    def __init__(self, config: DPPopularityConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.noise_std = 0.0
        self.sensitivity = 0.0
        self.release: Release | None = None  # what the ledger recorded (in memory only)

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> DPPopularity:
        """Bound each user's contribution, release noisy counts (recorded in `ledger` first).

        Args:
            dataset: the training interactions.
            rng: unused by the release (its noise is never seeded); kept for the contract.
            ledger: charged before any noise is drawn.
            noise_seed: tests and benchmarks only: reproducible noise, and then the model is no
                DP release (`privacy` None, saved with `"reproducible_noise": true`).
        """
        warn_unless_public_order(dataset, self.name)
        c = self.config
        x = self.input_matrix(dataset).astype(np.float64)
        x.data = np.minimum(x.data, c.max_weight)
        mask = most_recent_items(dataset, c.max_items)
        x = sp.csr_matrix(x.multiply(mask))
        run = start_private_fit(
            epsilon=c.epsilon,
            delta=c.delta,
            expected_users=c.expected_users,
            rng=rng,
            seed=c.seed,
            noise_seed=noise_seed,
        )
        self.sensitivity = float(c.max_weight * math.sqrt(c.max_items))
        mech = GaussianMechanism(gaussian_sigma(c.epsilon, run.delta), self.sensitivity)
        self.noise_std = mech.sigma
        release = Release(
            name=f"{self.name}:counts",
            epsilon=c.epsilon,
            delta=run.delta,
            mechanism="gaussian",
            accountant=ACCOUNTANT,
            details={
                "sensitivity_l2": self.sensitivity,
                "noise_std": mech.sigma,
                "noise_multiplier": mech.noise_multiplier,
                "max_items": c.max_items,
                "n_items": dataset.n_items,
                "unit": "user",
                "adjacency": ADJACENCY,
                "expected_users": c.expected_users,
            },
            event=gaussian_spec(mech.noise_multiplier),
        )
        run.charge(ledger, release, self.name)
        counts = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
        noisy = mech.add_noise(counts, run.noise) if run.private else counts
        self.popularity = np.maximum(noisy, 0.0).astype(np.float32)
        self.item_category, self.categories = self._categories(dataset)
        run.record(self, release)
        self._mark_fitted(dataset.n_items)
        return self

    def _meta(self) -> dict[str, Any]:
        return {
            **super()._meta(),
            "noise_std": self.noise_std,
            "sensitivity": self.sensitivity,
            **self._marker_meta(),
        }

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        self.noise_std = float(meta.get("noise_std", 0.0))
        self.sensitivity = float(meta.get("sensitivity", 0.0))
        self._read_marker(meta)
