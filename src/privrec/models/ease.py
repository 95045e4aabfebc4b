"""EASE: Embarrassingly Shallow Autoencoder (Steck, WWW 2019).

With the Gram matrix G = X^T X of the user x item matrix X and P = (G + reg * I)^-1, the item-item
weights are B = I - P / diag(P) (column j divided by P_jj), so diag(B) = 0, and a user with
history row h gets the scores h B.

The inverse is computed in float64 by an in-place Cholesky factorisation (LAPACK potrf/potri),
so the peak memory is about one float64 n x n array plus one float32 one (B): for 12k items
about 1.8 GB. G is kept (sparse CSR, float32; exact for integer counts below 2^24) because it is
the sufficient statistic: removing a user u is exactly G -= x_u^T x_u followed by a new inverse,
or a rank-|h_u| Woodbury update of B (`forget`; the arithmetic is in `models/unlearning.py`).
Co-occurrences are sparse on shop data (Beauty: ~1% of item pairs), so G costs megabytes, not
4 n^2 bytes.

Saved state: G (the state), and B with diag(P) (derived: `_set_state` recomputes them from G
when the derived file is absent, e.g. when an erasure saved the new version and a crash came
before B was written). B and diag(P) together determine P = (I - B) diag(diag(P)), which is what
exact unlearning needs: no inverse is kept beside the model.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg import lapack

from privrec.core.errors import PrivrecError
from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, register
from privrec.models.unlearning import UnlearningResult, nothing_removed, woodbury_downdate

if TYPE_CHECKING:
    from privrec.privacy.ledger import PrivacyLedger

_BLOCK = 1024  # rows per block when mirroring the triangle (bounds temporary memory)


class EASEConfig(InputConfig):
    """EASE settings.

    Attributes:
        reg: the L2 penalty lambda added to the Gram diagonal.
        binary: use a 0/1 matrix (Steck's setting) or event weights / ratings.
    """

    reg: float = Field(default=300.0, gt=0.0)
    binary: bool = True


def dense64(gram: np.ndarray | sp.spmatrix) -> np.ndarray:
    """A fresh C-order float64 copy of a dense or sparse square matrix."""
    if sp.issparse(gram):
        c = sp.coo_matrix(gram)
        a = np.zeros(c.shape, dtype=np.float64)
        a[c.row, c.col] = c.data
        return a
    return np.array(gram, dtype=np.float64, order="C", copy=True)


def ease_weights(gram: np.ndarray | sp.spmatrix, reg: float) -> np.ndarray:
    """B = I - P / diag(P) with P = (gram + reg I)^-1, diag(B) = 0, as float32."""
    return ease_solution(gram, reg)[0]


def ease_solution(gram: np.ndarray | sp.spmatrix, reg: float) -> tuple[np.ndarray, np.ndarray]:
    """B (float32, as `ease_weights`) and diag(P) (float64).

    P = (I - B) diag(diag(P)), so the pair determines P: exact unlearning updates them without
    keeping P (`models/unlearning.py`). `gram` (dense or sparse) is not modified; the work happens
    in one float64 copy that becomes P in place.
    """
    n = gram.shape[0]
    a = dense64(gram)
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
    return out, diag


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
        self.gram = sp.csr_matrix((0, 0), dtype=np.float32)  # G = X^T X, kept for exact unlearning
        self.weights = np.zeros((0, 0), np.float32)  # B
        self.p_diag = np.zeros(0, np.float64)  # diag(P): with B it determines P (for unlearning)

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> EASE:
        """Compute G and B; `rng` and `ledger` are unused (closed form, no DP release)."""
        self.gram = gram_of(self.input_matrix(dataset))
        self.weights, self.p_diag = ease_solution(self.gram, self.config.reg)
        self._mark_fitted(dataset.n_items)
        return self

    def fit_from_statistics(self, gram: sp.spmatrix, n_items: int) -> EASE:
        """`fit` from G = X^T X summed elsewhere (e.g. over user shards, `models/sharded.py`)."""
        if gram.shape != (n_items, n_items):
            raise PrivrecError(f"gram: shape {gram.shape} is not ({n_items}, {n_items})")
        self.gram = canonical_gram(gram)
        self.weights, self.p_diag = ease_solution(self.gram, self.config.reg)
        self._mark_fitted(n_items)
        return self

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """h B for each history row."""
        h = self._history_input(histories)
        return np.asarray(h @ self.weights, dtype=np.float32)

    def score(self, history: UserHistory, items: np.ndarray | None = None) -> np.ndarray:
        """h B for one history, as the weighted sum of the rows of B of its items."""
        self._check_fitted()
        it, w, _ = self.history_entries(history)
        if not len(it):
            out = np.zeros(self.n_items, np.float32)
        else:
            # the rows of B one by one: cheaper than a gathered copy of all of them
            b = self.weights
            w32 = w.astype(np.float32)
            out = b[int(it[0])] * w32[0]
            for j, wj in zip(it[1:].tolist(), w32[1:].tolist(), strict=True):
                out += b[j] * np.float32(wj) if wj != 1.0 else b[j]
        return out if items is None else out[np.asarray(items, dtype=np.int64)]

    def contributions(self, history: UserHistory, items: np.ndarray) -> np.ndarray:
        """h_j * B[j, i] per history entry j: each row sums to item i's score h B."""
        self._check_fitted()
        targets = np.asarray(items, dtype=np.int64)
        it, w, pos = self.history_entries(history)
        out = np.zeros((len(targets), len(history)), np.float64)
        if len(it) and len(targets):
            out[:, pos] = self.weights[np.ix_(it, targets)].T.astype(np.float64) * w[None, :]
        return out

    # ---- exact unlearning ------------------------------------------------------------------
    @property
    def can_forget(self) -> bool:
        """True: G is a sum over users and B follows from it (Woodbury).

        A subclass that fits differently does not inherit this: it must say so itself.
        """
        return type(self).fit is EASE.fit

    def forget(self, removed: InteractionDataset) -> UnlearningResult:
        """G -= X^T X and the Woodbury update of B and diag(P) (`woodbury_downdate`)."""
        t0 = time.perf_counter()
        if not self.can_forget:
            return super().forget(removed)
        x = self.removed_rows(removed)
        if not x.nnz:
            return nothing_removed(self.name, x.shape[0], t0)
        self.gram = canonical_gram(
            sp.csr_matrix(self.gram, dtype=np.float64) - sp.csr_matrix(x.T @ x)
        )
        self.p_diag = woodbury_downdate(self.weights, self.p_diag, x)
        return UnlearningResult(
            self.name,
            x.shape[0],
            int(np.unique(x.indices).size),
            time.perf_counter() - t0,
            "exact: Gram downdated, Woodbury update of B",
        )

    def _state(self) -> dict[str, np.ndarray]:
        g = self.gram
        return {
            "gram_data": g.data.astype(np.float32, copy=False),
            "gram_indices": g.indices.astype(np.int32, copy=False),
            "gram_indptr": g.indptr.astype(np.int64, copy=False),
        }

    def _derived(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "p_diag": self.p_diag}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if "gram" in arrays:  # artifacts saved before G was kept sparse
            self.gram = sp.csr_matrix(arrays["gram"].astype(np.float32, copy=False))
        else:
            n = arrays["gram_indptr"].shape[0] - 1
            self.gram = sp.csr_matrix(
                (arrays["gram_data"], arrays["gram_indices"], arrays["gram_indptr"]),
                shape=(n, n),
                dtype=np.float32,
            )
        if "weights" not in arrays:  # derived file not written (see the module docstring): as `fit`
            self.weights, self.p_diag = ease_solution(self.gram, self.config.reg)
            return
        self.weights = arrays["weights"].astype(np.float32, copy=False)
        if "p_diag" in arrays:
            self.p_diag = arrays["p_diag"].astype(np.float64, copy=False)
        else:  # saved before diag(P) was kept: (G + reg I)(I - B) = diag(P)^-1 gives it
            g = sp.csr_matrix(self.gram, dtype=np.float64)
            gb = np.asarray(g.multiply(self.weights.T).sum(axis=1)).ravel()  # sum_i G_ji B_ij
            self.p_diag = 1.0 / (g.diagonal() + self.config.reg - gb)


def gram_of(x: sp.spmatrix) -> sp.csr_matrix:
    """G = X^T X as canonical CSR float32 (summed in float64: exact for counts and weights)."""
    return canonical_gram(gram64_of(x))


def gram64_of(x: sp.spmatrix) -> sp.csr_matrix:
    """X^T X in float64 (CSR), before `canonical_gram`: a sum over users (rows of X), so the
    sums of row blocks add up to it (`models/sharded.py`)."""
    x = sp.csr_matrix(x, dtype=np.float64)
    return sp.csr_matrix(x.T @ x)


def canonical_gram(g: sp.spmatrix) -> sp.csr_matrix:
    """A (float64) Gram matrix as float32 CSR without explicit zeros, indices sorted."""
    g = sp.csr_matrix(g, dtype=np.float32)
    g.sum_duplicates()
    g.eliminate_zeros()
    g.sort_indices()
    return g
