"""Scoring users for the protocols: top-k selection, batched scoring and masked ranking.

Every protocol scores users in batches, so only a (batch_size x n_items) block of scores exists
at any time. Items in a user's training history can be masked to -inf (they cannot be
recommended again, as in Microsoft Recommenders' `remove_seen=True` and the S3-Rec full-ranking
evaluation); the top k comes from a partial sort (`np.partition`), ties broken by the lower item
index (as `models.base.top_k`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.base import Recommender

__all__ = [
    "Scorer",
    "batches",
    "binary_csr",
    "check_same_space",
    "history_rows",
    "ranked_batches",
    "recommend_top_k",
    "rows_of",
    "scores_for",
    "top_k_rows",
    "train_item_counts",
]

# User indices -> their (len(users), n_items) scores; stands in for `model.score_matrix`.
Scorer = Callable[[np.ndarray], np.ndarray]


# ---- top-k ------------------------------------------------------------------------------------
def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k item indices, best first; ties broken by the lower item index.

    Exact and per-row, so the result never depends on how rows are batched. NaN must already be
    replaced (the protocol maps NaN to -inf).
    """
    s = np.asarray(scores)
    b, n = s.shape
    k = int(min(k, n))
    if k <= 0 or b == 0:
        return np.empty((b, max(k, 0)), dtype=np.int64)
    neg = -s
    if k == n:
        return np.argsort(neg, axis=1, kind="stable").astype(np.int64)
    thr = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
    take = neg <= thr  # the top k plus any items tied with the k-th
    extra = np.nonzero(take.sum(axis=1) > k)[0]
    if extra.size:  # rows with ties at the cut: keep the lowest-index tied items only
        nb = neg[extra]
        better = nb < thr[extra]
        eq = nb == thr[extra]
        need = k - better.sum(axis=1)
        take[extra] = better | (eq & (np.cumsum(eq, axis=1, dtype=np.int32) <= need[:, None]))
    idx = (np.flatnonzero(take) % n).reshape(b, k)  # ascending item index within each row
    vals = np.take_along_axis(neg, idx, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1).astype(np.int64)


# ---- helpers -----------------------------------------------------------------------------------
def check_same_space(train: InteractionDataset, test: InteractionDataset) -> None:
    """Raise ValueError unless `train` and `test` share user and item vocabularies."""
    if train.n_items != test.n_items or train.n_users != test.n_users:
        raise ValueError(
            "test: its user/item vocabularies differ from train's "
            f"({test.n_users}x{test.n_items} vs {train.n_users}x{train.n_items}); "
            "build both with a splitter or InteractionDataset.subset so they share vocabularies"
        )


def binary_csr(ds: InteractionDataset) -> sp.csr_matrix:
    """The 0/1 user x item matrix of `ds`, column indices sorted within each row."""
    m = ds.matrix(binary=True)
    m.sort_indices()
    return m


def rows_of(m: sp.csr_matrix) -> np.ndarray:
    """The row index of every stored entry of `m`, aligned with `m.indices`."""
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))


def train_item_counts(train_binary: sp.csr_matrix) -> np.ndarray:
    """Distinct users per item in training (the popularity behind novelty and coverage)."""
    return np.bincount(train_binary.indices, minlength=train_binary.shape[1]).astype(np.int64)


def scores_for(
    model: Recommender | None,
    scorer: Scorer | None,
    hist: sp.csr_matrix,
    rows: np.ndarray,
    n_items: int,
) -> np.ndarray:
    """Scores of `rows` (from `scorer`, else the model on their history), NaN as -inf."""
    raw: Any  # dense, or sparse from a model that scores sparsely
    if scorer is not None:
        raw = scorer(rows)
    else:
        assert model is not None  # the caller passes a model or a scorer
        raw = model.score_matrix(hist[rows])
    s = np.asarray(raw.toarray() if sp.issparse(raw) else raw)
    if s.shape != (rows.shape[0], n_items):
        raise ValueError(
            f"model: score_matrix returned shape {s.shape}, expected {(rows.shape[0], n_items)}"
        )
    dtype = np.float64 if s.dtype == np.float64 else np.float32
    s = np.array(s, dtype=dtype, copy=True)  # we mask in place; never touch the model's arrays
    np.nan_to_num(s, copy=False, nan=-np.inf)
    return s


def history_rows(
    model: Recommender | None,
    train: InteractionDataset,
    history_matrix: sp.spmatrix | None,
    *,
    ratings: bool = False,
) -> sp.csr_matrix:
    """The history rows to score: given, else the model's own `input_matrix(train)` weighting."""
    if history_matrix is not None:
        hist = sp.csr_matrix(history_matrix)
    elif model is not None and hasattr(model, "input_matrix"):
        hist = model.input_matrix(train)
    else:
        hist = train.matrix(use_ratings=ratings)
    if hist.shape != (train.n_users, train.n_items):
        raise ValueError(
            f"history_matrix: shape {hist.shape}, expected {(train.n_users, train.n_items)}"
        )
    return hist


def batches(n: int, size: int) -> Iterable[slice]:
    """Consecutive slices of at most `size` (at least 1) covering range(n)."""
    size = max(int(size), 1)
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ---- ranked batches ------------------------------------------------------------------------------
def ranked_batches(
    model: Recommender | None,
    scorer: Scorer | None,
    hist: sp.csr_matrix,
    mask: sp.csr_matrix | None,
    users: np.ndarray,
    k: int,
    batch_size: int,
) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch of users: (rows, masked scores, top-k indices, top-k entry is finite)."""
    n_items = hist.shape[1]
    for sl in batches(users.shape[0], batch_size):
        rows = users[sl]
        s = scores_for(model, scorer, hist, rows, n_items)
        if mask is not None:
            mb = mask[rows]
            s[rows_of(mb), mb.indices] = -np.inf
        top = top_k_rows(s, k)
        valid = np.isfinite(
            np.take_along_axis(s, top, axis=1)
        )  # -inf = masked/unrankable, never a hit
        yield rows, s, top, valid


def recommend_top_k(
    model: Recommender | None,
    train: InteractionDataset,
    *,
    k: int = 10,
    users: Sequence[int] | np.ndarray | None = None,
    exclude_train: bool = True,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k item indices per user exactly as the protocol ranks them.

    Returns (users, items): `items` is (n_users, k) int64, best first, -1 where fewer than k items
    could be ranked (everything else masked). Users default to every user in `train`.
    """
    if model is None and scorer is None:
        raise ValueError("model: give a fitted model or a scorer")
    hist = history_rows(model, train, history_matrix)
    u = np.arange(train.n_users) if users is None else np.asarray(users, dtype=np.int64)
    kk = min(int(k), train.n_items)
    out = np.full((u.shape[0], kk), -1, dtype=np.int64)
    mask = binary_csr(train) if exclude_train else None
    pos = 0
    for rows, _s, top, valid in ranked_batches(model, scorer, hist, mask, u, kk, batch_size):
        out[pos : pos + rows.shape[0]] = np.where(valid, top, -1)
        pos += rows.shape[0]
    return u, out


def mapped_scorer(model: Recommender, vocab: Vocabulary, data: InteractionDataset) -> Scorer:
    """Scores of a saved version for `data`'s users over `data`'s items (its own vocabulary
    mapped; an item the version does not know cannot be recommended by it: -inf)."""
    to_art = np.array([vocab.index(k) if k in vocab else -1 for k in data.items.keys], np.int64)
    known = np.flatnonzero(to_art >= 0)
    move = sp.csr_matrix(
        (np.ones(len(known)), (known, to_art[known])), shape=(data.n_items, len(vocab))
    )
    rows = sp.csr_matrix(model.input_matrix(data) @ move)

    def score(users: np.ndarray) -> np.ndarray:
        art = np.asarray(model.score_matrix(rows[users]), dtype=np.float64)
        out = np.full((len(users), data.n_items), -np.inf)
        out[:, known] = art[:, to_art[known]]
        return out

    return score
