"""Exact unlearning: the shared arithmetic behind `Recommender.forget`.

Popularity, item-kNN and EASE keep a sufficient statistic that is a plain sum over users, so a
user u with input row x_u (the row of `model.input_matrix(train)`) can be taken out exactly. Each
of those models overrides `can_forget` / `forget`; this module is the library they call:

- Popularity: popularity -= x_u (column sums). Exact when no time decay is configured (with
  `half_life_days` every weight depends on the newest event in the data: retrain instead).
- Item-kNN (`downdate_neighbours`): G -= x_u^T x_u, then the neighbour lists are recomputed only
  where they can change: fully for the user's own items (their Gram rows changed) and, for every
  item co-occurring with them, by merging the old top-k (minus the user's items) with the new
  similarities to the user's items (those only grow, because G_ij is unchanged for i outside the
  history and the norm of j shrank). The result is the same as `cosine_topk` on the new Gram
  matrix.
- EASE (`woodbury_downdate`): G -= x_u^T x_u and P = (G + reg I)^-1 is downdated with the
  Woodbury identity (Sherman-Morrison for one user):

      P' = P + U W,  U = P X^T,  W = (I - X P X^T)^-1 U^T      (X: the k users' rows)

  P itself is not kept: the model's B and d = diag(P) determine it, P = (I - B) diag(d), so U
  needs only the rows of B of the users' items, and B is updated in place, block by block:
  B'_ij = (B_ij d_j - (U W)_ij) / d'_j with d' = d + diag(U W), diag(B') = 0. That is one read
  and one write of B (float32; Beauty's 12k items: 586 MB) in row blocks small enough to stay in
  cache, on two threads (numpy and BLAS release the GIL). Keeping a float64 P instead would cost
  1.2 GB of memory, one more inverse, and 5 times the memory traffic. Each erasure rounds B to
  float32 once more (half a unit in the last place, ~3e-8 relative); a retrain (due anyway for
  the models that cannot unlearn) resets that.

After `forget`, the model's state equals (up to float rounding, < 1e-6) the state of the same
model trained without those users; the conformance suite and tests/models/test_unlearning.py check
it. DP models do not forget: their guarantee already bounds any one user's influence.

This module imports no model class: the models import it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import sgemm

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


def nothing_removed(model: str, users: int, t0: float) -> UnlearningResult:
    """The result of an erasure whose users touched no item the model knows."""
    return UnlearningResult(model, users, 0, time.perf_counter() - t0, "exact: nothing to remove")


def lookup(g: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
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


def topk_per_row(
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


def downdate_neighbours(
    gram: sp.csr_matrix, similarity: sp.csr_matrix, x: sp.csr_matrix, *, k: int, shrink: float
) -> tuple[sp.csr_matrix, sp.csr_matrix, int]:
    """Item-kNN without the users of rows `x` (see the module docstring).

    Args:
        gram: G = X^T X with the users (not modified).
        similarity: the row-wise top-k cosine neighbours of `gram` (not modified).
        x: the users' input rows (float64 CSR, canonical; at least one item).
        k: neighbours kept per item.
        shrink: the cosine shrinkage.

    Returns:
        (the new G, the new neighbours, the number of items whose neighbour row changed).
    """
    h = np.unique(x.indices)
    g = sp.csr_matrix(gram - sp.csr_matrix(x.T @ x), dtype=np.float64)
    g.eliminate_zeros()
    g.sort_indices()
    n = g.shape[0]
    norms = np.sqrt(np.maximum(g.diagonal(), 0.0))
    in_h = np.zeros(n, dtype=bool)
    in_h[h] = True
    old = sp.csr_matrix(similarity)
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
    was_in = lookup(old, rt, ct) != 0
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
    vals = np.concatenate([cosine(r1, c1, v1), cosine(r2, c2, lookup(g, r2, c2)), newv[sel]])
    off = rows_all != cols_all
    nr, nc, nv = topk_per_row(rows_all[off], cols_all[off], vals[off], k)

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
    sim = sp.csr_matrix((all_v, (all_r, all_c)), shape=(n, n), dtype=np.float32)
    return g, sim, int(in_h.sum() + np.unique(rt).size)


def woodbury_downdate(b: np.ndarray, d: np.ndarray, x: sp.csr_matrix) -> np.ndarray:
    """EASE without the users of rows `x`: B updated in place, the new diag(P) returned.

    Args:
        b: B (float32, n x n), overwritten with B'.
        d: diag(P) (float64).
        x: the users' input rows (float64 CSR, canonical; at least one item).

    Returns:
        d' = diag(P').
    """
    cols = np.unique(x.indices)
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
    return new_d
