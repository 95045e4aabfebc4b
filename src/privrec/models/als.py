"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) trained by the `implicit` library (CPU).

Training wraps `implicit.cpu.als.AlternatingLeastSquares` and keeps only the item factors Y.
A user is represented by their history: at request time the user vector is the exact
least-squares solution given Y (implicit's confidence convention, c_j = alpha * h_j):

    x_u = (Y^T Y + reg I + sum_j (c_j - 1) y_j y_j^T)^-1  sum_j c_j y_j

computed in float64 for a batch of histories (a small BLAS product per user and one batched
solve), so a new user is served at once and an erased user leaves no vector behind.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, register, seed_from

if TYPE_CHECKING:
    from privrec.privacy.ledger import PrivacyLedger

_CHUNK = 1024  # histories solved together


class ALSConfig(InputConfig):
    """ALS settings.

    Attributes:
        embedding_size: number of latent factors.
        reg: L2 regularisation (implicit's `regularization`).
        epochs: ALS iterations.
        alpha: confidence scale, c = alpha * weight (implicit's convention).
        use_cg: train with implicit's conjugate-gradient solver (faster) instead of Cholesky.
        num_threads: training threads (0: all cores).
        seed: seeds the initial factors; `fit(rng=...)` overrides it.
        binary: use a 0/1 matrix (True) or event weights / ratings as confidences.
    """

    embedding_size: int = Field(default=64, ge=1)
    reg: float = Field(default=10.0, ge=0.0)
    epochs: int = Field(default=15, ge=1)
    alpha: float = Field(default=1.0, gt=0.0)
    use_cg: bool = True
    num_threads: int = Field(default=0, ge=0)
    seed: int = DEFAULT_SEED
    binary: bool = True


@register
class ALS(Recommender):
    """Implicit ALS with user vectors solved from the history at request time."""

    name = "als"
    Config = ALSConfig
    config: ALSConfig

    def __init__(self, config: ALSConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.item_factors = np.zeros((0, self.config.embedding_size), np.float32)
        self._yty = np.zeros((self.config.embedding_size,) * 2, np.float64)

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> ALS:
        """Train item factors with implicit on `input_matrix(dataset)`; `ledger` is unused (no
        DP release)."""
        return self.fit_matrix(self.input_matrix(dataset), rng=rng)

    def fit_matrix(self, x: sp.csr_matrix, *, rng: int | np.random.Generator | None = None) -> ALS:
        """Train on a ready user x item confidence matrix (float32 CSR; used as is when one)."""
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        threads = c.num_threads or (os.cpu_count() or 1)
        # implicit runs its own threads; a threaded BLAS underneath would oversubscribe the cores
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=c.embedding_size,
                regularization=c.reg,
                alpha=c.alpha,
                dtype=np.float32,
                use_cg=c.use_cg,
                iterations=c.epochs,
                num_threads=threads,
                random_state=seed_from(rng, c.seed),
            )
            model.fit(x if isinstance(x, sp.csr_matrix) else sp.csr_matrix(x), show_progress=False)
        self._set_items(np.asarray(model.item_factors, dtype=np.float32))
        self._mark_fitted(x.shape[1])
        return self

    def _set_items(self, y: np.ndarray) -> None:
        self.item_factors = y
        y64 = y.astype(np.float64)
        self._yty = y64.T @ y64

    # ---- user vectors from histories ----------------------------------------------------------
    def _systems(self, h: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Per history row, the normal equations (A_u, b_u) of the user's least squares."""
        c = self.config
        y = self.item_factors.astype(np.float64, copy=False)
        f = y.shape[1]
        conf = h.data.astype(np.float64) * c.alpha
        a = np.broadcast_to(self._yty + c.reg * np.eye(f), (h.shape[0], f, f)).copy()
        ind, ptr = h.indices, h.indptr
        for u in range(h.shape[0]):
            s, e = ptr[u], ptr[u + 1]
            if s == e:
                continue
            yh = y[ind[s:e]]
            a[u] += (yh.T * (conf[s:e] - 1.0)) @ yh
        cp = sp.csr_matrix((np.where(conf > 0, conf, 0.0), ind, ptr), shape=h.shape)
        b = np.asarray(cp @ y)
        return a, b

    def user_vectors(self, histories: sp.csr_matrix) -> np.ndarray:
        """The exact ALS user factors for each history row (float32)."""
        h = self._history_input(histories)
        out = np.zeros((h.shape[0], self.item_factors.shape[1]), np.float32)
        # chunks bound the stacked f x f systems (1024 users x 64^2 float64 = 32 MB)
        for r0 in range(0, h.shape[0], _CHUNK):
            r1 = min(h.shape[0], r0 + _CHUNK)
            a, b = self._systems(h[r0:r1])
            out[r0:r1] = np.linalg.solve(a, b[..., None])[..., 0]
        return out

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """x_u . y_i for each history row's solved x_u."""
        return self.user_vectors(histories) @ self.item_factors.T

    def contributions(self, history: UserHistory, items: np.ndarray) -> np.ndarray:
        """The exact additive share c_j y_i^T A_u^-1 y_j of each history entry j in the score
        y_i . x_u (x_u = A_u^-1 sum_j c_j y_j, so the shares add up to the score)."""
        self._check_fitted()
        targets = np.asarray(items, dtype=np.int64)
        it, w, pos = self.history_entries(history)
        out = np.zeros((len(targets), len(history)), np.float64)
        if not len(it) or not len(targets):
            return out
        h = sp.csr_matrix(
            (w, (np.zeros(len(it), np.int64), it)), shape=(1, self.n_items), dtype=np.float32
        )
        a, _ = self._systems(h)
        y = self.item_factors.astype(np.float64)
        conf = np.maximum(w * self.config.alpha, 0.0)
        solved = np.linalg.solve(a[0], y[targets].T)  # f x len(targets): A_u^-1 y_i
        out[:, pos] = (y[it] @ solved).T * conf[None, :]
        return out

    # ---- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self._set_items(arrays["item_factors"].astype(np.float32))
