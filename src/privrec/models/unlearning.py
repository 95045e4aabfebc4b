"""Exact unlearning: remove users' contributions from models whose state is a sum over users.

Popularity, item-kNN and EASE keep a sufficient statistic that is a plain sum over users, so a
user u with input row x_u (the row of `model.input_matrix(train)`) can be taken out exactly:

- Popularity: popularity -= x_u (column sums). Exact when no time decay is configured (with
  `half_life_days` every weight depends on the newest event in the data: retrain instead).
- Item-kNN: G -= x_u^T x_u, then the neighbour lists are recomputed only where they can change:
  fully for the user's own items (their Gram rows changed) and, for every item co-occurring with
  them, by merging the old top-k (minus the user's items) with the new similarities to the
  user's items (those only grow, because G_ij is unchanged for i outside the history and the
  norm of j shrank). The result is the same as `cosine_topk` on the new Gram matrix.
- EASE: G -= x_u^T x_u and P = (G + reg I)^-1 is downdated with the Woodbury identity
  (Sherman-Morrison for one user):

      P' = P + U W,  U = P X^T,  W = (I - X P X^T)^-1 U^T      (X: the k users' rows)

  P itself is not kept: the model's B and d = diag(P) determine it, P = (I - B) diag(d), so U
  needs only the rows of B of the users' items, and B is updated in place, block by block:
  B'_ij = (B_ij d_j - (U W)_ij) / d'_j with d' = d + diag(U W), diag(B') = 0. That is one read
  and one write of B (float32; Beauty's 12k items: 586 MB) in row blocks small enough to stay in
  cache, on two threads (numpy and BLAS release the GIL). Keeping a float64 P instead would cost
  1.2 GB of memory, one more inverse, and 5 times the memory traffic. Each erasure rounds B to
  float32 once more (half a unit in the last place, ~3e-8 relative); a retrain (due anyway for
  the models that cannot unlearn) resets that.

After `forget_*`, the model's state equals (up to float rounding, < 1e-6) the state of the same
model trained without those users; tests/models/test_unlearning.py checks it. DP models are not
handled here: their guarantee already bounds any one user's influence.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import sgemm

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender
from privrec.models.ease import EASE, canonical_gram
from privrec.models.itemknn import ItemKNN
from privrec.models.popularity import Popularity

_UPDATE_BLOCK = 16  # rows per step of the fused EASE downdate (12k items: 1.5 MB, stays in cache)
_UPDATE_THREADS = 2


@dataclass(frozen=True)
class UnlearningResult:
    """What one exact erasure did to one model."""

    model: str
    users: int
    items_touched: int
    seconds: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no personal data: counts and timings only)."""
        return {
            "model": self.model,
            "users": self.users,
            "items_touched": self.items_touched,
            "seconds": round(self.seconds, 6),
            "method": self.method,
        }


def user_rows(
    model: Recommender, dataset: InteractionDataset, users: Sequence[int] | np.ndarray
) -> sp.csr_matrix:
    """The input rows (as the model trained on them) of the given user indices of `dataset`."""
    x = model.input_matrix(dataset)
    return sp.csr_matrix(x[np.asarray(users, dtype=np.int64)])


def _clean_rows(model: Recommender, rows: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    x = sp.csr_matrix(rows, dtype=np.float64, copy=True)
    if x.shape[1] != model.n_items:
        raise ValueError(
            f"rows: {x.shape[1]} item columns but the model knows {model.n_items} items"
        )
    x.sum_duplicates()
    x.eliminate_zeros()
    if getattr(model.config, "binary", False):
        x.data[:] = 1.0
    return x


def _removal(model: Recommender, rows: sp.spmatrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """The users' cleaned rows and the items they touched (checks that the model is fitted)."""
    model._check_fitted()
    x = _clean_rows(model, rows)
    return x, np.unique(x.indices)


def _nothing_removed(model: Recommender, x: sp.csr_matrix, t0: float) -> UnlearningResult:
    return UnlearningResult(
        model.name, x.shape[0], 0, time.perf_counter() - t0, "exact: nothing to remove"
    )


def supports_exact_unlearning(model: Recommender) -> bool:
    """Whether `forget` can remove a user exactly from this (non-private) model."""
    if type(model) is Popularity:
        return model.config.half_life_days is None
    return type(model) in (ItemKNN, EASE)


# ---- popularity ------------------------------------------------------------------------------------
def forget_popularity(model: Popularity, rows: sp.spmatrix) -> UnlearningResult:
    """popularity -= the users' input rows (exact without time decay)."""
    t0 = time.perf_counter()
    model._check_fitted()
    if model.config.half_life_days is not None:
        raise ConfigError(
            "popularity: exact unlearning needs half_life_days=None (decayed weights depend on the newest event); retrain instead"
        )
    x = _clean_rows(model, rows)
    contrib = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    touched = np.nonzero(contrib)[0]
    pop = model.popularity.astype(np.float64)
    pop[touched] -= contrib[touched]
    model.popularity = pop.astype(np.float32)
    return UnlearningResult(
        model.name,
        x.shape[0],
        int(touched.size),
        time.perf_counter() - t0,
        "exact: counts downdated",
    )


# ---- item-kNN --------------------------------------------------------------------------------------
def _lookup(g: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """g[rows, cols] for a CSR g with sorted indices, vectorised (0 where absent)."""
    n = g.shape[1]
    keys = (
        np.repeat(np.arange(g.shape[0], dtype=np.int64), np.diff(g.indptr)) * n + g.indices
    )  # sorted
    want = rows.astype(np.int64) * n + cols
    pos = np.minimum(np.searchsorted(keys, want), max(keys.shape[0] - 1, 0))
    out = np.zeros(rows.shape[0], dtype=np.float64)
    if keys.shape[0]:
        ok = keys[pos] == want
        out[ok] = g.data[pos[ok]]
    return out


def _topk(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the k largest values (ties: lower column), exactly as `cosine_topk` selects them."""
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    if rows.size == 0:
        return rows, cols, vals
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    start_idx = np.maximum.accumulate(np.where(first, np.arange(rows.size), 0))
    rank = np.arange(rows.size) - start_idx
    top = rank < k
    return rows[top], cols[top], vals[top]


def forget_itemknn(model: ItemKNN, rows: sp.spmatrix) -> UnlearningResult:
    """G -= X^T X and the affected neighbour lists recomputed (see the module docstring)."""
    t0 = time.perf_counter()
    x, h = _removal(model, rows)
    if h.size == 0:
        return _nothing_removed(model, x, t0)
    g = sp.csr_matrix(model.gram - sp.csr_matrix(x.T @ x), dtype=np.float64)
    g.eliminate_zeros()
    g.sort_indices()
    n = g.shape[0]
    norms = np.sqrt(np.maximum(g.diagonal(), 0.0))
    shrink, k = model.config.shrink, model.config.k
    in_h = np.zeros(n, dtype=bool)
    in_h[h] = True
    old = sp.csr_matrix(model.similarity)
    old.sort_indices()

    def cosine(r: np.ndarray, c: np.ndarray, gv: np.ndarray) -> np.ndarray:
        denom = norms[r] * norms[c] + shrink
        return np.divide(gv, denom, out=np.zeros_like(gv), where=denom > 0)

    # 1) the user's own items: their Gram rows changed, recompute them whole
    sub = g[h]
    r1 = np.repeat(h, np.diff(sub.indptr)).astype(np.int64)
    c1 = sub.indices.astype(np.int64)
    v1 = sub.data
    # 2) other items j co-occurring with them: only sim(j, i) for i in h changed, and it grew
    #    (G_ji is unchanged, ||x_i|| shrank). By symmetry those entries are rows 1) transposed.
    t = ~in_h[c1]
    rt, ct = c1[t], r1[t]
    newv = cosine(rt, ct, v1[t])
    was_in = _lookup(old, rt, ct) != 0
    cnt = np.diff(old.indptr)
    row_min = np.full(n, np.inf)
    has = cnt > 0
    if has.any():
        row_min[has] = np.minimum.reduceat(old.data.astype(np.float64), old.indptr[:-1][has])
    # an entry outside the old top-k can only enter a full list by beating its smallest value;
    # rows where that may happen (with a margin for float32 storage) are re-ranked exactly
    enters = ~was_in & ((cnt[rt] < k) | (newv >= row_min[rt] * (1.0 - 1e-5)))
    rerank = np.unique(rt[enters])
    is_rerank = np.zeros(n, dtype=bool)
    is_rerank[rerank] = True
    # re-ranked rows: candidates = their old top-k (values recomputed) plus all their h entries
    o = old[rerank]
    r2 = np.repeat(rerank, np.diff(o.indptr)).astype(np.int64)
    c2 = o.indices.astype(np.int64)
    c2_keep = ~in_h[c2]
    r2, c2 = r2[c2_keep], c2[c2_keep]
    sel = is_rerank[rt]
    rows_all = np.concatenate([r1, r2, rt[sel]])
    cols_all = np.concatenate([c1, c2, ct[sel]])
    vals = np.concatenate([cosine(r1, c1, v1), cosine(r2, c2, _lookup(g, r2, c2)), newv[sel]])
    off = rows_all != cols_all
    nr, nc, nv = _topk(rows_all[off], cols_all[off], vals[off], k)

    # 3) assemble: untouched rows as they were, h-column values refreshed in the other rows
    s = old.tocoo()
    sr, sc, sv = s.row.astype(np.int64), s.col.astype(np.int64), s.data.copy()
    upd = was_in & ~is_rerank[rt]
    if upd.any():
        pos = np.searchsorted(sr * n + sc, rt[upd] * n + ct[upd])  # COO of canonical CSR is sorted
        sv[pos] = newv[upd].astype(np.float32)
    keep_old = ~(in_h[sr] | is_rerank[sr])
    all_r = np.concatenate([sr[keep_old], nr])
    all_c = np.concatenate([sc[keep_old], nc])
    all_v = np.concatenate([sv[keep_old], nv.astype(np.float32)])
    model.gram = g
    model.similarity = sp.csr_matrix((all_v, (all_r, all_c)), shape=(n, n), dtype=np.float32)
    model._sim_t = model.similarity.T.tocsr()
    touched = int(in_h.sum() + np.unique(rt).size)
    return UnlearningResult(
        model.name,
        x.shape[0],
        touched,
        time.perf_counter() - t0,
        "exact: co-occurrences downdated, affected neighbours recomputed",
    )


# ---- EASE ------------------------------------------------------------------------------------------
def forget_ease(model: EASE, rows: sp.spmatrix) -> UnlearningResult:
    """G -= X^T X and the Woodbury update of B and diag(P) (see the module docstring)."""
    t0 = time.perf_counter()
    x, cols = _removal(model, rows)
    if cols.size == 0:
        return _nothing_removed(model, x, t0)
    model.gram = canonical_gram(
        sp.csr_matrix(model.gram, dtype=np.float64) - sp.csr_matrix(x.T @ x)
    )
    b, d = model.weights, model.p_diag
    xj = x[:, cols].toarray()  # k users x |J| items, float64
    # rows J of P (= its columns: P is symmetric): P[j, :] = (e_j - B[j, :]) * d
    pj = -b[cols].astype(np.float64)
    pj[np.arange(cols.size), cols] += 1.0
    pj *= d[None, :]
    u = (xj @ pj).T  # n x k: P X^T
    s = np.eye(xj.shape[0]) - xj @ u[cols, :]  # k x k, positive definite while G' + reg I is
    w = np.linalg.solve(s, u.T)  # k x n
    new_d = d + np.einsum("ik,ki->i", u, w)
    # B' = B + delta with delta_ij = B_ij (d_j / d'_j - 1) - (U W)_ij / d'_j. delta is tiny next to
    # B, so computing it in float32 costs far less than B's own rounding: B' is rounded once per
    # erasure, as a float64 update would be, at a quarter of the memory traffic.
    km1 = (d / new_d - 1.0).astype(np.float32)
    wt = np.ascontiguousarray((w / new_d[None, :]).T, dtype=np.float32)  # n x k
    u32 = np.ascontiguousarray(u, dtype=np.float32)
    n = b.shape[0]

    def update(r0: int) -> None:
        r1 = min(n, r0 + _UPDATE_BLOCK)
        blk = b[r0:r1]
        delta = blk * km1
        # delta^T -= W~^T U_blk^T in place (BLAS: no temporary for the rank-k product)
        delta = sgemm(-1.0, wt, u32[r0:r1].T, beta=1.0, c=delta.T, overwrite_c=1).T
        blk += delta

    with ThreadPoolExecutor(_UPDATE_THREADS, thread_name_prefix="privrec-ease-downdate") as pool:
        list(pool.map(update, range(0, n, _UPDATE_BLOCK)))
    b[np.diag_indices(n)] = 0.0
    model.p_diag = new_d
    return UnlearningResult(
        model.name,
        x.shape[0],
        int(cols.size),
        time.perf_counter() - t0,
        "exact: Gram downdated, Woodbury update of B",
    )


# ---- one entry point --------------------------------------------------------------------------------
def forget(model: Recommender, rows: sp.spmatrix) -> UnlearningResult:
    """Remove the users given by their input rows from `model` exactly, in place.

    Args:
        model: a fitted Popularity (without decay), ItemKNN or EASE model.
        rows: the users' rows of `model.input_matrix(train)` (see `user_rows`).

    Raises:
        ConfigError: the model cannot unlearn exactly (retrain it instead).
    """
    if type(model) is Popularity:
        return forget_popularity(model, rows)
    if type(model) is ItemKNN:
        return forget_itemknn(model, rows)
    if type(model) is EASE:
        return forget_ease(model, rows)
    raise ConfigError(
        f"{model.name}: no exact unlearning for this model; retrain it without the user"
    )
