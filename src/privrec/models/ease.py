"""EASE: Embarrassingly Shallow Autoencoder (Steck, WWW 2019).

With the Gram matrix G = X^T X of the user x item matrix X and P = (G + reg * I)^-1, the item-item
weights are B = I - P / diag(P) (column j divided by P_jj), so diag(B) = 0, and a user with
history row h gets the scores h B.

The inverse is computed in float64 by an in-place Cholesky factorisation (LAPACK potrf/potri),
so the peak memory is about one float64 n x n array plus two float32 ones (G and B): for
12k items about 2.3 GB. G is kept (float32; exact for integer counts below 2^24) because it is
the sufficient statistic: removing a user u is exactly G -= x_u^T x_u followed by a new inverse
(or a rank-|h_u| Woodbury downdate of P) in issue 4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg import lapack

from privrec.core.errors import PrivrecError
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, history_explanation, register

_BLOCK = 1024  # rows per block when mirroring the triangle (bounds temporary memory)


class EASEConfig(InputConfig):
    """EASE settings.

    Attributes:
        reg: the L2 penalty lambda added to the Gram diagonal.
        binary: use a 0/1 matrix (Steck's setting) or event weights / ratings.
    """

    reg: float = Field(default=300.0, gt=0.0)
    binary: bool = True


def ease_weights(gram: np.ndarray, reg: float) -> np.ndarray:
    """B = I - P / diag(P) with P = (gram + reg I)^-1, diag(B) = 0, as float32.

    `gram` is not modified; the work happens in one float64 copy that becomes P in place.
    """
    n = gram.shape[0]
    a = np.array(gram, dtype=np.float64, order="C", copy=True)
    a[np.diag_indices(n)] += reg
    # a is symmetric, so its transpose is the same matrix in Fortran order: LAPACK works in place
    at = a.T
    c, info = lapack.dpotrf(at, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise PrivrecError(f"ease: Cholesky factorisation failed (info={info}); increase reg")
    inv, info = lapack.dpotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise PrivrecError(f"ease: inverse failed (info={info}); increase reg")
    p = inv.T  # C-order view; its lower triangle holds P
    if not np.shares_memory(p, a):  # LAPACK wrapper copied after all: keep going on the copy
        a = np.ascontiguousarray(p)
        p = a
    _mirror_lower(p)
    diag = p.diagonal().copy()
    out = np.empty((n, n), dtype=np.float32)
    for r0 in range(0, n, _BLOCK):
        r1 = min(n, r0 + _BLOCK)
        out[r0:r1] = p[r0:r1] / -diag[None, :]
    out[np.diag_indices(n)] = 0.0
    return out


def _mirror_lower(p: np.ndarray) -> None:
    """Copy the lower triangle of square `p` onto its upper triangle, block by block."""
    n = p.shape[0]
    for r0 in range(0, n, _BLOCK):
        r1 = min(n, r0 + _BLOCK)
        blk = p[r0:r1, r0:r1]
        low = np.tril(blk)
        blk[...] = low + np.tril(low, -1).T
        if r1 < n:
            p[r0:r1, r1:] = p[r1:, r0:r1].T


@register
class EASE(Recommender):
    """EASE item-item model (see the module docstring)."""

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def __init__(self, config: EASEConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.gram = np.zeros((0, 0), np.float32)  # G = X^T X, kept for exact unlearning
        self.weights = np.zeros((0, 0), np.float32)  # B

    def fit(self, dataset: InteractionDataset, *, rng: int | np.random.Generator | None = None) -> EASE:
        """Compute G and B; `rng` is unused (EASE is closed form)."""
        x = self.input_matrix(dataset).astype(np.float64)
        self.gram = sp.csr_matrix(x.T @ x).astype(np.float32).toarray()
        self.weights = ease_weights(self.gram, self.config.reg)
        self._mark_fitted(dataset.n_items)
        return self

    def refresh_weights(self) -> None:
        """Recompute B from the current Gram matrix (after an update of `gram`)."""
        self.weights = ease_weights(self.gram, self.config.reg)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """h B for each history row."""
        h = self._history_input(histories)
        return np.asarray(h @ self.weights, dtype=np.float32)

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """"because you bought/viewed X": history items j ranked by h_j * B[j, item]."""
        self._check_fitted()
        h = self._history_input(self.history_matrix([history]))
        items = h.indices.astype(np.int64)
        contrib = h.data.astype(np.float64) * self.weights[items, int(item)]
        return history_explanation(history, int(item), items, contrib)

    def _state(self) -> dict[str, np.ndarray]:
        g = self.gram
        # row-major positions are already in CSR order; comparing the bits as int32 is faster
        # than a float comparison (a -0.0 entry is kept: it equals 0 exactly)
        flat = np.flatnonzero(np.ascontiguousarray(g).view(np.int32) != 0)
        if flat.size * 3 >= g.size:
            return {"weights": self.weights, "gram": g}
        # Co-occurrence counts are sparse on real data (Beauty: ~1% of pairs): stored as CSR the
        # Gram matrix costs megabytes instead of 4 n^2 bytes, so saving after an erasure is fast.
        n = g.shape[1]
        rows = flat // n
        indptr = np.zeros(g.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=g.shape[0]), out=indptr[1:])
        return {"weights": self.weights, "gram_data": g.ravel()[flat].astype(np.float32), "gram_indices": (flat % n).astype(np.int32),
                "gram_indptr": indptr}  # fmt: skip

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.weights = arrays["weights"].astype(np.float32, copy=False)
        if "gram" in arrays:
            self.gram = arrays["gram"].astype(np.float32, copy=False)
        else:
            n = self.weights.shape[0]
            c = sp.csr_matrix((arrays["gram_data"], arrays["gram_indices"], arrays["gram_indptr"]), shape=(n, n), dtype=np.float32)
            self.gram = c.toarray()
