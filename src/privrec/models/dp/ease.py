"""DP EASE: EASE on a user-level differentially private Gram matrix, denoised.

One DP release (`dp.release.release_gram`, fitted by `dp.gram.PrivateGramRecommender`): DP item
selection (noisy popularity of unit-norm user rows, keep the `top_items` most popular) composed with
the Gram matrix of the selected items, each user's row scaled to unit L2 norm, plus symmetric
Gaussian noise (std s off the diagonal). The PLD accountant calibrates both to (epsilon, delta);
everything after is post-processing:

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

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import register
from privrec.models.dp.gram import PrivateGramConfig, PrivateGramRecommender
from privrec.models.dp.release import GramRelease, GramStatistics, PrivateFit
from privrec.models.dp.weighted import RowBound, release_weighted_gram
from privrec.models.ease import ease_weights
from privrec.privacy.ledger import PrivacyLedger


class DPEASEConfig(PrivateGramConfig):
    """DP EASE settings (plus those of `PrivateGramConfig`; compute grows as top_items^3).

    Attributes:
        denoise: "spectral" (low-rank shrinkage, see the module docstring) or "none".
        reg: ridge of EASE on the unit-row Gram matrix (its trace is the number of users).
        reg_noise: extra ridge per unit of the noise edge 2 s sqrt(m).
        max_user_items: at most this many items per shopper (uniform sample; `dp.weighted`).
        row_scale: "unit" (rows to unit L2 norm) or "uniform" (1/sqrt(max_user_items) each).
        frequency_exponent: a > 0 spends more of each shopper's norm on rare items (columns
            x (noisy count / max)^-a before the row scaling; undone after the release).
    """

    denoise: str = Field(default="spectral", pattern="^(spectral|none)$")
    reg: float = Field(default=3.0, gt=0.0)
    reg_noise: float = Field(default=0.2, ge=0.0)
    # issue 16 item 4 (`dp.weighted`): contribution caps and frequency-aware weights
    max_user_items: int | None = Field(default=None, ge=1)
    row_scale: str = Field(default="unit", pattern="^(unit|uniform)$")
    frequency_exponent: float = Field(default=0.0, ge=0.0, le=2.0)


def spectral_denoise(g: np.ndarray, noise_std: float) -> tuple[np.ndarray, int]:
    """Low-rank shrinkage of a symmetric matrix seen through GOE noise (off-diagonal std s).

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
class DPEASE(PrivateGramRecommender):
    """User-level DP EASE (see the module docstring)."""

    name = "dp_ease"
    Config = DPEASEConfig
    config: DPEASEConfig

    def __init__(self, config: DPEASEConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.weights = np.zeros((0, 0), np.float32)  # B on the selected items
        self.rank = 0
        self.ridge = 0.0
        self.item_scale: np.ndarray | None = None  # d of `dp.weighted` (None: all ones)

    def row_bound(self) -> RowBound:
        """The contribution bound of the release (`dp.weighted`)."""
        c = self.config
        return RowBound(c.max_user_items, c.row_scale, c.frequency_exponent, c.seed)

    def _release(
        self,
        dataset: InteractionDataset,
        x: sp.csr_matrix,
        run: PrivateFit,
        ledger: PrivacyLedger | None,
        stats: GramStatistics | None,
    ) -> GramRelease:
        bound = self.row_bound()
        self.item_scale = None
        if bound.is_default:
            return super()._release(dataset, x, run, ledger, stats)
        if stats is not None:
            raise ConfigError(
                "max_user_items / row_scale / frequency_exponent: not supported on sharded "
                "statistics; fit in one process"
            )
        c = self.config
        rel, d = release_weighted_gram(
            x,
            bound,
            model=self.name,
            run=run,
            top_items=c.top_items,
            max_items_auto=c.max_items_auto,
            selection_share=c.selection_share,
            ledger=ledger,
        )
        self.item_scale = d
        return rel

    def _fit_released(self, rel: GramRelease, private: bool) -> None:
        """Spectral denoising (when private), then EASE with the noise-adapted ridge.

        With item scales d (frequency-aware rows) both happen in the scaled space, where the
        noise is homogeneous, and B is mapped back: B_ij = d_i B'_ij / d_j.
        """
        c = self.config
        g = rel.gram
        if c.denoise == "spectral" and private:
            g, self.rank = spectral_denoise(g, rel.noise_std)
        else:
            self.rank = g.shape[0]
        m = g.shape[0]
        self.ridge = c.reg + c.reg_noise * 2.0 * rel.noise_std * math.sqrt(m)
        self.weights = self._solve(g, self.ridge)
        d = self.item_scale
        if d is not None and not np.all(d == 1.0):
            self.weights = (d[:, None] * self.weights / d[None, :]).astype(np.float32)

    def _solve(self, gram: np.ndarray, ridge: float) -> np.ndarray:
        """B from the (denoised) released Gram; subclasses may shrink towards a prior."""
        return ease_weights(gram, ridge)

    def selected_scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """h B: scores of the selected items only (columns in `selected` order), float64."""
        h = self._history_input(histories)
        return np.asarray(h[:, self.selected] @ self.weights, dtype=np.float64)

    def _weights_to(self, pos: int) -> np.ndarray:
        return self.weights[:, pos]

    def _state(self) -> dict[str, np.ndarray]:
        return {"selected": self.selected, "weights": self.weights, "popularity": self.popularity}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.selected = arrays["selected"].astype(np.int64)
        self.weights = arrays["weights"].astype(np.float32)
        self.popularity = arrays["popularity"].astype(np.float32)
        self.noise_std = float(meta.get("noise_std", 0.0))
        self._read_marker(meta)
        self.rank = int(meta.get("rank", 0))
        self.ridge = float(meta.get("ridge", 0.0))

    def _meta(self) -> dict[str, Any]:
        return {
            "noise_std": self.noise_std,
            "rank": self.rank,
            "ridge": self.ridge,
            **self._marker_meta(),
        }
