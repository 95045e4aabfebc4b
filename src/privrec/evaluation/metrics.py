"""Ranking, beyond-accuracy and rating metrics: pure functions on ranked lists and relevance sets.

The accuracy metrics follow Microsoft Recommenders, `recommenders/evaluation/python_evaluation.py`
(read in recommenders-team/recommenders, both the current file and the older
`reco_utils/evaluation/python_evaluation.py` that produced the README benchmark table):

- Every held-out item is relevant (binary relevance, no rating threshold).
- Precision@k = hits in the top k / k, even when fewer than k items are recommended
  (Spark's definition, which they follow).
- Recall@k = hits in the top k / number of relevant items.
- NDCG@k: binary gain, discount 1 / ln(1 + rank) (their default `discfun_type="loge"`); the ideal
  DCG puts min(n_relevant, k) hits at the top. The ratio does not depend on the log base.
- MAP ("map"): sum over hits in the top k of (hits so far / rank), divided by the number of
  relevant items. This is their old `map_at_k` (the one behind the README's MAP column, e.g.
  SAR 0.111) and their current `map`. Their *current* `map_at_k` divides by min(n_relevant, k)
  instead; we offer that as "map_min" and never call it MAP.
- Averages run over the users who have at least one relevant item and received a list (their
  "common users"); a user with hits contributes, a user without hits contributes 0.

Conventions of this module (documented where Microsoft Recommenders is silent):
- Relevant items are a set: duplicates in the relevant list count once.
- A ranked list that repeats an item counts a hit only at its first position; later copies still
  take up a rank (so a model gains nothing by repeating a good item).
- A user with no relevant items scores 0 in the per-user functions; the `mean_*` functions leave
  such users out, as Microsoft Recommenders does.
- MRR without k uses the whole list given; with k, only the top k.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "RANKING_METRICS",
    "average_precision_at_k",
    "batch_intra_list_diversity",
    "catalogue_coverage",
    "hit_rate_at_k",
    "hits_vector",
    "intra_list_diversity",
    "mae",
    "mean_intra_list_diversity",
    "mean_ranking_metrics",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "ranking_metrics_from_hits",
    "recall_at_k",
    "reciprocal_rank",
    "rmse",
]

# Per-user accuracy metrics computed from a hit matrix (names as used in metric keys "name@k").
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "map_min", "hr", "mrr")


# ---- the vectorised core -----------------------------------------------------------------------
def _discounts(k: int) -> np.ndarray:
    """1 / ln(1 + rank) for rank = 1..k (Microsoft Recommenders' default 'loge' discount)."""
    return 1.0 / np.log(np.arange(2, k + 2, dtype=np.float64))


def ranking_metrics_from_hits(
    hits: np.ndarray, n_relevant: np.ndarray, k: int, names: Iterable[str] = RANKING_METRICS
) -> dict[str, np.ndarray]:
    """Per-user accuracy metrics at cut-off k from a boolean hit matrix.

    This is the one implementation behind both the list functions below and the batched protocol.

    Args:
        hits: (n_users, L) booleans, hits[u, j] true when the item at rank j+1 is relevant (first
            occurrence only). Columns beyond k are ignored; fewer than k columns mean a short list.
        n_relevant: (n_users,) number of distinct relevant items per user.
        k: the cut-off.
        names: which of RANKING_METRICS to compute.

    Returns:
        name -> float64 array of shape (n_users,).
    """
    if k <= 0:
        raise ValueError(f"k: must be a positive integer, got {k}")
    h = np.asarray(hits, dtype=bool)
    if h.ndim != 2:
        raise ValueError("hits: expected a 2-D (users x ranks) array")
    h = h[:, :k]
    if h.shape[1] < k:  # a short list: pad with misses so every formula sees k ranks
        h = np.concatenate([h, np.zeros((h.shape[0], k - h.shape[1]), dtype=bool)], axis=1)
    n_rel = np.asarray(n_relevant, dtype=np.float64).reshape(-1)
    if n_rel.shape[0] != h.shape[0]:
        raise ValueError("n_relevant: needs one count per row of hits")
    has = n_rel > 0
    safe = np.where(has, n_rel, 1.0)
    hf = h.astype(np.float64)
    n_hits = hf.sum(axis=1)
    out: dict[str, np.ndarray] = {}
    wanted = set(names)
    unknown = wanted - set(RANKING_METRICS)
    if unknown:
        raise ValueError(
            f"names: unknown metric(s) {sorted(unknown)}; known: {', '.join(RANKING_METRICS)}"
        )
    if "precision" in wanted:
        out["precision"] = n_hits / k
    if "recall" in wanted:
        out["recall"] = np.where(has, n_hits / safe, 0.0)
    if "ndcg" in wanted:
        disc = _discounts(k)
        dcg = (hf * disc).sum(axis=1)  # row-wise, not BLAS: a row never depends on its batch
        ideal = np.concatenate([[0.0], np.cumsum(disc)])  # ideal[m] = DCG of m hits at the top
        idcg = ideal[np.minimum(n_rel, k).astype(np.int64)]
        out["ndcg"] = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)
    if "map" in wanted or "map_min" in wanted:
        ranks = np.arange(1, k + 1, dtype=np.float64)
        ap_sum = (np.cumsum(hf, axis=1) / ranks * hf).sum(axis=1)
        if "map" in wanted:
            out["map"] = np.where(has, ap_sum / safe, 0.0)
        if "map_min" in wanted:
            out["map_min"] = np.where(has, ap_sum / np.minimum(safe, k), 0.0)
    if "hr" in wanted:
        out["hr"] = (n_hits > 0).astype(np.float64)
    if "mrr" in wanted:
        first = np.argmax(h, axis=1)
        out["mrr"] = np.where(n_hits > 0, 1.0 / (first + 1.0), 0.0)
    return out


# ---- one user: ranked list + relevant items ----------------------------------------------------
def hits_vector(
    ranked: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int | None = None
) -> np.ndarray:
    """Booleans per rank of `ranked` (first k): relevant and not seen earlier in the list."""
    r = np.asarray(ranked).reshape(-1)
    if k is not None:
        r = r[:k]
    rel = set(np.asarray(list(relevant)).reshape(-1).tolist())
    seen: set[int] = set()
    out = np.zeros(r.shape[0], dtype=bool)
    for j, item in enumerate(r.tolist()):
        if item not in seen:
            out[j] = item in rel
            seen.add(item)
    return out


def _one(ranked: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int, name: str) -> float:
    rel = set(np.asarray(list(relevant)).reshape(-1).tolist())
    h = hits_vector(ranked, rel, k)[None, :]
    return float(ranking_metrics_from_hits(h, np.array([len(rel)]), k, (name,))[name][0])


def precision_at_k(ranked: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int) -> float:
    """Hits in the top k divided by k (not by the list length)."""
    return _one(ranked, relevant, k, "precision")


def recall_at_k(ranked: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int) -> float:
    """Hits in the top k divided by the number of relevant items (0 when there are none)."""
    return _one(ranked, relevant, k, "recall")


def ndcg_at_k(ranked: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int) -> float:
    """Binary-gain NDCG@k with discount 1/ln(1+rank); ideal = min(n_relevant, k) hits on top."""
    return _one(ranked, relevant, k, "ndcg")


def average_precision_at_k(
    ranked: Sequence[int] | np.ndarray,
    relevant: Iterable[int],
    k: int,
    *,
    normalize: str = "relevant",
) -> float:
    """Sum over hits in the top k of the precision at that rank, over the number of relevant items.

    Args:
        normalize: "relevant" (Microsoft Recommenders' `map`, the old `map_at_k` behind their
            README table) or "min_k" (their current `map_at_k`: divide by min(n_relevant, k)).
    """
    if normalize not in ("relevant", "min_k"):
        raise ValueError("normalize: must be 'relevant' or 'min_k'")
    return _one(ranked, relevant, k, "map" if normalize == "relevant" else "map_min")


def hit_rate_at_k(ranked: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int) -> float:
    """1.0 when a relevant item is in the top k, else 0.0 (HR@k: Recall@k for one relevant item)."""
    return _one(ranked, relevant, k, "hr")


def reciprocal_rank(
    ranked: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int | None = None
) -> float:
    """1 / rank of the first relevant item (within the top k when k is given), 0 when none."""
    r = np.asarray(ranked).reshape(-1)
    return _one(r, relevant, int(k if k is not None else max(len(r), 1)), "mrr")


def mean_ranking_metrics(
    ranked_lists: Sequence[Sequence[int] | np.ndarray],
    relevant_sets: Sequence[Iterable[int]],
    k: int,
    names: Iterable[str] = ("precision", "recall", "ndcg", "map"),
) -> dict[str, float]:
    """Means over users with at least one relevant item (Microsoft Recommenders' averaging).

    Returns name -> mean, plus "n_users" (how many users were averaged).
    """
    if len(ranked_lists) != len(relevant_sets):
        raise ValueError("ranked_lists and relevant_sets must have one entry per user")
    names = tuple(names)
    rows, counts = [], []
    for ranked, relevant in zip(ranked_lists, relevant_sets, strict=True):
        rel = set(np.asarray(list(relevant)).reshape(-1).tolist())
        if not rel:
            continue
        h = np.zeros(k, dtype=bool)
        hv = hits_vector(ranked, rel, k)
        h[: hv.shape[0]] = hv
        rows.append(h)
        counts.append(len(rel))
    if not rows:
        return {**{n: 0.0 for n in names}, "n_users": 0}
    per = ranking_metrics_from_hits(np.stack(rows), np.array(counts), k, names)
    return {**{n: float(per[n].mean()) for n in names}, "n_users": len(rows)}


# ---- beyond accuracy ---------------------------------------------------------------------------
def catalogue_coverage(rec_lists: Iterable[Sequence[int] | np.ndarray], n_items: int) -> float:
    """Distinct items recommended to anyone / catalogue size.

    Microsoft Recommenders' `catalog_coverage` uses the number of distinct items in the training
    data as the catalogue size; the protocol passes that number.
    """
    if n_items <= 0:
        raise ValueError("n_items: the catalogue size must be positive")
    seen: set[int] = set()
    for r in rec_lists:
        seen.update(np.asarray(r).reshape(-1).tolist())
    return len(seen) / float(n_items)


def novelty(rec_lists: Iterable[Sequence[int] | np.ndarray], item_counts: np.ndarray) -> float:
    """Mean self-information -log2 p(i) over all recommendations, p(i) = count(i) / sum(counts).

    `item_counts[i]` is item i's number of training interactions (distinct user-item pairs, as
    in Microsoft Recommenders' `historical_item_novelty`). Recommendations are pooled over users
    (their `novelty`). Items never seen in training have no defined p(i) and are left out (they
    count as 0 in Microsoft Recommenders, which drops them from the sum but not from the count).
    Returns 0.0 when nothing is left to average.
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    info = np.full(counts.shape[0], np.nan)
    pos = counts > 0
    info[pos] = -np.log2(counts[pos] / total)
    vals = [info[np.asarray(r, dtype=np.int64).reshape(-1)] for r in rec_lists]
    allv = np.concatenate(vals) if vals else np.empty(0)
    allv = allv[~np.isnan(allv)]
    return float(allv.mean()) if allv.size else 0.0


def _normalise_rows(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(f, axis=-1, keepdims=True)
    return np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)


def intra_list_diversity(rec_list: Sequence[int] | np.ndarray, item_features: np.ndarray) -> float:
    """1 - mean cosine similarity over the distinct pairs (i < j) of one list.

    Rows of `item_features` are item vectors (an all-zero row has similarity 0 with everything).
    Repeated items in the list are counted once. A list with fewer than two distinct items has
    no pairs: returns 0.0.
    """
    items = list(dict.fromkeys(np.asarray(rec_list, dtype=np.int64).reshape(-1).tolist()))
    if len(items) < 2:
        return 0.0
    f = _normalise_rows(np.asarray(item_features)[items])
    sim = f @ f.T
    iu = np.triu_indices(len(items), k=1)
    return float(1.0 - sim[iu].mean())


def mean_intra_list_diversity(
    rec_lists: Iterable[Sequence[int] | np.ndarray], item_features: np.ndarray
) -> float:
    """Intra-list diversity averaged over users whose list has at least two distinct items."""
    vals = []
    for r in rec_lists:
        if len(set(np.asarray(r).reshape(-1).tolist())) >= 2:
            vals.append(intra_list_diversity(r, item_features))
    return float(np.mean(vals)) if vals else 0.0


def batch_intra_list_diversity(
    top: np.ndarray, valid: np.ndarray, item_features_unit: np.ndarray
) -> np.ndarray:
    """Per-row intra-list diversity of a (B, k) index matrix of distinct items (NaN: < 2 items).

    `item_features_unit` must have unit-norm (or zero) rows; `valid` masks real entries.
    """
    f = item_features_unit[top] * valid[..., None]
    kk = top.shape[1]
    s = np.zeros(top.shape[0], dtype=np.float64)
    n_pairs = np.zeros(top.shape[0], dtype=np.int64)
    # pair by pair with row-wise reductions (no BLAS): each row's value is independent of the batch
    for i in range(kk):
        for j in range(i + 1, kk):
            ok = valid[:, i] & valid[:, j]
            s += np.where(ok, (f[:, i, :] * f[:, j, :]).sum(axis=1), 0.0)
            n_pairs += ok
    return np.where(n_pairs > 0, 1.0 - s / np.maximum(n_pairs, 1), np.nan)


# ---- rating prediction -------------------------------------------------------------------------
def _pair(
    y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.shape[0]} vs {p.shape[0]})")
    if t.size == 0:
        raise ValueError("y_true: no ratings to compare")
    return t, p


def rmse(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    """Root mean squared error of rating predictions."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    """Mean absolute error of rating predictions."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))
