"""Full-ranking evaluation: every item scored for every test user, metrics over the top k.

Items in the user's training history are set to -inf before ranking (by default); ties are
broken by the lower item index (`scoring.top_k_rows`). Users are processed in batches, so only a
(batch_size x n_items) block of scores exists at any time.

Which users count: those with at least one test item and (by default) a non-empty history, the
"common users" of Microsoft Recommenders (a user they cannot score is not averaged). Metric names
are those of `metric_spec`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.evaluation import metrics as M
from privrec.evaluation.metric_spec import default_ranking_metrics, parse_metric
from privrec.evaluation.scoring import (
    Scorer,
    binary_csr,
    check_same_space,
    history_rows,
    ranked_batches,
    rows_of,
    train_item_counts,
)
from privrec.models.base import Recommender

log = logging.getLogger(__name__)

__all__ = ["evaluate_ranking"]

# Metrics over the recommended lists themselves: cut off at min(k, n_items).
_LIST_METRICS = ("coverage", "novelty", "diversity")


def evaluate_ranking(
    model: Recommender | None,
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    k: int = 10,
    metrics: Sequence[str] | None = None,
    batch_size: int = 1024,
    exclude_train: bool = True,
    users: Sequence[int] | np.ndarray | None = None,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    item_features: np.ndarray | None = None,
    item_counts: np.ndarray | None = None,
    skip_cold_users: bool = True,
    per_user: bool = False,
) -> dict[str, Any]:
    """Full-ranking evaluation of a fitted model: every item scored for every test user.

    Args:
        model: a fitted Recommender; its `score_matrix(history rows)` gives the scores.
        train: the training part; its items are masked per user and give popularity.
        test: the held-out part, same vocabularies as `train`; every test item is relevant.
        k: default cut-off for metrics given without "@k".
        metrics: metric names (see the module docstring); default MAP, NDCG, Precision, Recall @k.
        batch_size: users scored at once.
        exclude_train: set the user's training items to -inf before ranking.
        users: restrict to these user indices (still only those with test items).
        history_matrix: the user x item history rows to score; default `model.input_matrix(train)`
            (the weighting the model trained with), or `train.matrix()` without a model.
        scorer: instead of `model.score_matrix`, a function from user indices to dense scores
            (for models that need more than a weighted history, e.g. ordered sequences).
        item_features: (n_items, d) vectors for "diversity".
        item_counts: training interactions per item for "novelty"/"coverage"; default from `train`.
        skip_cold_users: leave out users with an empty history (Microsoft Recommenders' common
            users).
        per_user: also return "per_user" (key -> array over "users") for list-level metrics.

    Returns:
        metric key -> mean over users, plus "n_users", "k" and "eval_seconds"; with `per_user`,
        "users" (user indices evaluated) and "per_user".
    """
    t0 = time.perf_counter()
    if model is None and scorer is None:
        raise ValueError("model: give a fitted model or a scorer")
    check_same_space(train, test)
    specs = [
        parse_metric(m, k) for m in (metrics if metrics is not None else default_ranking_metrics(k))
    ]
    if not specs:
        raise ValueError("metrics: ask for at least one metric")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"metrics: duplicates after normalising names: {keys}")
    if any(s.name == "diversity" for s in specs) and item_features is None:
        raise ValueError("item_features: 'diversity' needs an (n_items, d) item feature matrix")
    n_users, n_items = train.n_users, train.n_items
    if (
        scorer is None
        and model is not None
        and getattr(model, "n_items", n_items) not in (0, n_items)
    ):
        raise ValueError(f"model: trained on {model.n_items} items but the data has {n_items}")

    train_bin = binary_csr(train)
    hist = history_rows(model, train, history_matrix)
    test_bin = binary_csr(test)
    counts = train_item_counts(train_bin) if item_counts is None else np.asarray(item_counts)

    n_rel_all = np.diff(test_bin.indptr)
    eligible = n_rel_all > 0
    if skip_cold_users:
        eligible &= np.diff(hist.indptr) > 0
    if users is not None:
        chosen = np.zeros(n_users, dtype=bool)
        chosen[np.asarray(users, dtype=np.int64)] = True
        eligible &= chosen
    eval_users = np.nonzero(eligible)[0]

    k_max = max((s.k for s in specs if s.k is not None), default=1)
    k_max = min(k_max, n_items)
    need_full_mrr = any(s.key == "mrr" for s in specs)
    acc_names = sorted({s.name for s in specs if s.name in M.RANKING_METRICS and s.k is not None})
    per: dict[str, list[np.ndarray]] = {
        s.key: [] for s in specs if s.name not in ("coverage", "novelty")
    }
    cover = {s.key: np.zeros(n_items, dtype=bool) for s in specs if s.name == "coverage"}
    nov_info = None
    if any(s.name == "novelty" for s in specs):
        tot = float(counts.sum())
        nov_info = np.full(n_items, np.nan)
        pos = counts > 0
        if tot > 0:
            nov_info[pos] = -np.log2(counts[pos] / tot)
    nov_acc: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        s.key: ([], []) for s in specs if s.name == "novelty"
    }
    feats = M._normalise_rows(item_features) if item_features is not None else None
    if feats is not None and feats.shape[0] != n_items:
        raise ValueError(f"item_features: {feats.shape[0]} rows, expected one per item ({n_items})")

    for rows, s, top, valid in ranked_batches(
        model, scorer, hist, train_bin if exclude_train else None, eval_users, k_max, batch_size
    ):
        b = rows.shape[0]
        tst = test_bin[rows]
        rel_rows, rel_cols = rows_of(tst), tst.indices
        rel = np.zeros((b, n_items), dtype=bool)
        rel[rel_rows, rel_cols] = True
        n_rel = n_rel_all[rows]
        hits = np.take_along_axis(rel, top, axis=1) & valid

        by_k: dict[int, dict[str, np.ndarray]] = {}
        for spec in specs:
            if spec.k is None:
                continue
            kk = min(spec.k, n_items) if spec.name in _LIST_METRICS else spec.k
            if spec.name in M.RANKING_METRICS:
                if spec.k not in by_k:
                    by_k[spec.k] = M.ranking_metrics_from_hits(hits, n_rel, spec.k, acc_names)
                per[spec.key].append(by_k[spec.k][spec.name])
            elif spec.name == "coverage":
                sel = top[:, :kk][valid[:, :kk]]
                cover[spec.key][sel] = True
            elif spec.name == "novelty":
                sel = top[:, :kk]
                assert nov_info is not None  # set above whenever a novelty metric is asked for
                info = nov_info[sel]
                ok = valid[:, :kk] & ~np.isnan(info)
                # per-user sums first, totals at the end: the result never depends on batching
                nov_acc[spec.key][0].append(np.where(ok, info, 0.0).sum(axis=1))
                nov_acc[spec.key][1].append(ok.sum(axis=1))
            elif spec.name == "diversity":
                assert feats is not None  # checked on entry: "diversity" needs item_features
                per[spec.key].append(
                    M.batch_intra_list_diversity(top[:, :kk], valid[:, :kk], feats)
                )
        if need_full_mrr:
            per["mrr"].append(_full_rank_rr(s, rel_rows, rel_cols))

    out: dict[str, Any] = {}
    per_arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name == "coverage":
            denom = int((counts > 0).sum()) or n_items
            out[spec.key] = float(cover[spec.key].sum() / denom)
        elif spec.name == "novelty":
            sums, cnts = (np.concatenate(x) if x else np.empty(0) for x in nov_acc[spec.key])
            total = int(cnts.sum())
            out[spec.key] = (
                float(sums.sum() / total) if total else 0.0
            )  # pooled over all recommendations
            per_arrays[spec.key] = np.where(cnts > 0, sums / np.maximum(cnts, 1), np.nan)
        else:
            arr = np.concatenate(per[spec.key]) if per[spec.key] else np.empty(0)
            if spec.name == "diversity":
                out[spec.key] = float(np.nanmean(arr)) if np.isfinite(arr).any() else 0.0
            else:
                # Microsoft Recommenders: sum over users / number of common users
                out[spec.key] = float(arr.mean()) if arr.size else 0.0
            per_arrays[spec.key] = arr
    out["n_users"] = int(eval_users.shape[0])
    out["k"] = int(k)
    out["eval_seconds"] = time.perf_counter() - t0
    if per_user:
        out["users"] = eval_users
        out["per_user"] = per_arrays
    log.info(
        "evaluated ranking n_users=%d n_items=%d seconds=%.3f",
        out["n_users"],
        n_items,
        out["eval_seconds"],
    )
    return out


def _full_rank_rr(s: np.ndarray, rel_rows: np.ndarray, rel_cols: np.ndarray) -> np.ndarray:
    """1 / (full-ranking rank of the first relevant item), ties as in top_k_rows; 0 if unrankable.

    `rel_rows`/`rel_cols` list the relevant (row, item) pairs, rows ascending.
    """
    b, n = s.shape
    best = np.full(b, -np.inf, dtype=np.float64)
    np.maximum.at(best, rel_rows, s[rel_rows, rel_cols].astype(np.float64))
    ok = np.isfinite(best)
    thr = best.astype(s.dtype)[:, None]
    ahead = (s > thr).sum(axis=1)
    # ties with the best relevant score: items with a lower index rank ahead of it
    first = np.full(b, n, dtype=np.int64)
    at_best = s[rel_rows, rel_cols] == thr[rel_rows, 0]
    np.minimum.at(first, rel_rows[at_best], rel_cols[at_best])
    n_eq = (s == thr).sum(axis=1)
    tied = np.nonzero(ok & (n_eq > 1))[0]
    for r in tied:  # rare: exact score ties with the best relevant item
        ahead[r] += int(np.count_nonzero(s[r, : first[r]] == thr[r, 0]))
    return np.where(ok, 1.0 / (ahead + 1.0), 0.0)
