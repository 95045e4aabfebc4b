"""DP EASE: EASE on a user-level differentially private Gram matrix, denoised.

One DP release (`dp_popularity.release_gram`): DP item selection (noisy popularity of unit-norm
user rows, keep the `top_items` most popular) composed with the Gram matrix of the selected
items, each user's row scaled to unit L2 norm, plus symmetric Gaussian noise (std s off the
diagonal). The PLD accountant calibrates both to (epsilon, delta); everything after is
post-processing:

1. Spectral denoising (`denoise="spectral"`): the noise is a Wigner (GOE) matrix whose
   eigenvalues fill [-2 s sqrt(m), 2 s sqrt(m)] for m items. Eigen-directions of the noisy
   matrix above that edge carry signal; an eigenvalue l above it comes from a signal eigenvalue
   theta = (l + sqrt(l^2 - 4 s^2 m)) / 2, and the Frobenius-optimal estimate shrinks it further
   by the eigenvector's lost overlap, to theta - s^2 m / theta. Everything below the edge is
   dropped: the released Gram becomes a low-rank, shrunk estimate.
2. EASE on it with a ridge adapted to the noise: lambda = reg + reg_noise * 2 s sqrt(m)
   (the noise edge: directions near it are the least reliable).
3. Scores: h B on the selected items; the others rank below them by noisy popularity, which also
   breaks ties (a user without history gets the DP popularity ranking).

With epsilon = inf nothing is noised or denoised (the same pipeline, no guarantee).
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
from privrec.models.dp_popularity import (
    active_users,
    release_gram,
    resolve_delta,
    selected_above_rest,
)
from privrec.models.ease import ease_weights
from privrec.privacy.dp import Release
from privrec.privacy.ledger import PrivacyLedger


class DPEASEConfig(InputConfig):
    """DP EASE settings.

    Attributes:
        epsilon: user-level privacy budget of the one release (inf: no noise, no guarantee).
        delta: None means 1 / (10 x number of users).
        top_items: items kept by DP selection; None chooses n_users / (4 z) (z: the Gram noise
            multiplier) clipped to [50, max_items_auto]; at epsilon = inf every item.
        max_items_auto: upper bound of the automatic choice (compute grows as m^3).
        selection_share: share of the budget spent on the selection.
        denoise: "spectral" (low-rank shrinkage, see the module docstring) or "none".
        reg: ridge of EASE on the unit-row Gram matrix (its trace is the number of users).
        reg_noise: extra ridge per unit of the noise edge 2 s sqrt(m).
        seed: seeds the noise; `fit(rng=...)` overrides it.
        binary: 0/1 rows (True) or event weights (False) before the unit-norm scaling.
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    top_items: int | None = Field(default=None, ge=1)
    max_items_auto: int = Field(default=2000, ge=10)
    selection_share: float = Field(default=0.1, gt=0.0, lt=1.0)
    denoise: str = Field(default="spectral", pattern="^(spectral|none)$")
    reg: float = Field(default=3.0, gt=0.0)
    reg_noise: float = Field(default=0.2, ge=0.0)
    seed: int = DEFAULT_SEED
    binary: bool = True


def auto_top_items(n_users: int, noise_multiplier: float, n_items: int, cap: int) -> int:
    """The default number of selected items: n_users / (4 z), clipped to [50, cap] and n_items."""
    if noise_multiplier <= 0:
        return n_items
    return int(min(n_items, cap, max(50, round(n_users / (4.0 * noise_multiplier)))))


def choose_top_items(
    top: int | None,
    *,
    epsilon: float,
    delta: float,
    selection_share: float,
    n_users: int,
    n_items: int,
    cap: int,
) -> int:
    """`top` if given; else every item without noise, or `auto_top_items` for the Gram release's noise."""
    if top is not None:
        return top
    if math.isinf(epsilon):
        return n_items
    from privrec.privacy.dp import calibrate_gaussians, gaussian_sigma, split_ratios

    z_gram = (
        calibrate_gaussians(split_ratios([selection_share, 1 - selection_share]), epsilon, delta)[1]
        if gaussian_sigma(epsilon, delta) > 0
        else 0.0
    )
    return auto_top_items(n_users, z_gram, n_items, cap)


def spectral_denoise(g: np.ndarray, noise_std: float) -> tuple[np.ndarray, int]:
    """Low-rank shrinkage of a symmetric matrix observed with GOE noise (off-diagonal std `noise_std`).

    Returns the estimate and its rank. With no noise the matrix is returned unchanged.
    """
    if noise_std <= 0:
        return g, g.shape[0]
    from scipy.linalg import eigh

    m = g.shape[0]
    edge = 2.0 * noise_std * math.sqrt(m)
    # only the eigenpairs above the edge are needed (far fewer than m: much faster than all)
    w, v = eigh(g, subset_by_value=(edge, np.inf), driver="evr")
    keep = w > edge
    lam = w[keep]
    theta = (lam + np.sqrt(np.maximum(lam * lam - edge * edge, 0.0))) / 2.0
    theta = theta - noise_std * noise_std * m / theta
    ok = theta > 0
    vk = v[:, keep][:, ok]
    return (vk * theta[ok]) @ vk.T, int(ok.sum())


@register
class DPEASE(Recommender):
    """User-level DP EASE (see the module docstring)."""

    name = "dp_ease"
    Config = DPEASEConfig
    config: DPEASEConfig

    def __init__(self, config: DPEASEConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.selected = np.zeros(0, np.int64)
        self.weights = np.zeros((0, 0), np.float32)  # B on the selected items
        self.popularity = np.zeros(0, np.float32)  # noisy selection counts (all items)
        self.noise_std = 0.0
        self.rank = 0
        self.ridge = 0.0
        self.noisy_gram: np.ndarray | None = None  # the released matrix (kept in memory only)
        self.release: Release | None = None  # what the ledger recorded (in memory only)

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> DPEASE:
        """One DP release (recorded in `ledger` before noise is drawn), then post-processing."""
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
        )
        self.noisy_gram = rel.gram
        self.noise_std = rel.noise_std
        g = rel.gram
        if c.denoise == "spectral" and private:
            g, self.rank = spectral_denoise(g, rel.noise_std)
        else:
            self.rank = g.shape[0]
        m = g.shape[0]
        self.ridge = c.reg + c.reg_noise * 2.0 * rel.noise_std * math.sqrt(m)
        self.weights = ease_weights(g, self.ridge)
        self.selected = rel.selected
        self.popularity = np.maximum(rel.counts, 0.0).astype(np.float32)
        self.privacy = rel.release.guarantee() if private else None
        self.release = rel.release if private else None
        self._mark_fitted(dataset.n_items)
        return self

    def _prior(self) -> np.ndarray:
        top = float(self.popularity.max()) if self.popularity.size else 0.0
        return (self.popularity / top if top > 0 else self.popularity).astype(np.float64)

    def selected_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """h B: scores of the selected items only (columns in `selected` order), float64."""
        h = self._history_input(histories)
        return np.asarray(h[:, self.selected] @ self.weights, dtype=np.float64)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """h B on the selected items; the other items below them, by noisy popularity."""
        return selected_above_rest(
            self.selected_scores(histories), self.selected, self._prior(), self.n_items
        )

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """History items j ranked by h_j * B[j, item] (both selected), else "popular"."""
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
        contrib = np.zeros(items.size)
        contrib[ok] = h.data[ok].astype(np.float64) * self.weights[loc[ok], pos]
        return history_explanation(history, int(item), items, contrib)

    def _state(self) -> dict[str, np.ndarray]:
        return {"selected": self.selected, "weights": self.weights, "popularity": self.popularity}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.selected = arrays["selected"].astype(np.int64)
        self.weights = arrays["weights"].astype(np.float32)
        self.popularity = arrays["popularity"].astype(np.float32)
        self.noise_std = float(meta.get("noise_std", 0.0))
        self.rank = int(meta.get("rank", 0))
        self.ridge = float(meta.get("ridge", 0.0))

    def _meta(self) -> dict[str, Any]:
        return {"noise_std": self.noise_std, "rank": self.rank, "ridge": self.ridge}
