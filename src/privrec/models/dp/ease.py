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

from privrec.models.base import register
from privrec.models.dp.gram import PrivateGramConfig, PrivateGramRecommender
from privrec.models.dp.release import GramRelease
from privrec.models.ease import ease_weights


class DPEASEConfig(PrivateGramConfig):
    """DP EASE settings (plus those of `PrivateGramConfig`; compute grows as top_items^3).

    Attributes:
        denoise: "spectral" (low-rank shrinkage, see the module docstring) or "none".
        reg: ridge of EASE on the unit-row Gram matrix (its trace is the number of users).
        reg_noise: extra ridge per unit of the noise edge 2 s sqrt(m).
    """

    denoise: str = Field(default="spectral", pattern="^(spectral|none)$")
    reg: float = Field(default=3.0, gt=0.0)
    reg_noise: float = Field(default=0.2, ge=0.0)


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

    def _fit_released(self, rel: GramRelease, private: bool) -> None:
        """Spectral denoising (when private), then EASE with the noise-adapted ridge."""
        c = self.config
        g = rel.gram
        if c.denoise == "spectral" and private:
            g, self.rank = spectral_denoise(g, rel.noise_std)
        else:
            self.rank = g.shape[0]
        m = g.shape[0]
        self.ridge = c.reg + c.reg_noise * 2.0 * rel.noise_std * math.sqrt(m)
        self.weights = ease_weights(g, self.ridge)

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
