"""Evaluation protocols: full ranking, leave-one-out, rating prediction and user k-fold CV.

This module holds the protocols built on the full-ranking loop (leave-one-out, rating
prediction, user k-fold cross-validation) and is the one import callers need; the pieces live in:

- `full_ranking`: `evaluate_ranking`, every item scored for every test user (which users count,
  masking, batching).
- `scoring`: `top_k_rows`, `recommend_top_k` and the batched, masked scoring they share.
- `metric_spec`: metric names ("ndcg@10", "map", "mrr", ...) and `parse_metric`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import user_kfold_holdout
from privrec.evaluation import metrics as M
from privrec.evaluation.full_ranking import evaluate_ranking
from privrec.evaluation.metric_spec import (
    DEFAULT_LOO_METRICS,
    MetricSpec,
    default_ranking_metrics,
    parse_metric,
)
from privrec.evaluation.scoring import (
    Scorer,
    batches,
    binary_csr,
    check_same_space,
    history_rows,
    recommend_top_k,
    scores_for,
    top_k_rows,
    train_item_counts,
)
from privrec.models.base import Recommender

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LOO_METRICS",
    "MetricSpec",
    "cross_validate",
    "default_ranking_metrics",
    "evaluate_loo",
    "evaluate_ranking",
    "evaluate_rating",
    "parse_metric",
    "recommend_top_k",
    "top_k_rows",
]


def evaluate_loo(
    model: Recommender | None,
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    k: int = 10,
    metrics: Sequence[str] | None = None,
    batch_size: int = 1024,
    exclude_train: bool = True,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    users: Sequence[int] | np.ndarray | None = None,
    per_user: bool = False,
) -> dict[str, Any]:
    """Leave-one-out full ranking: one held-out item per user; HR@k, NDCG@k and MRR by default.

    HR@k equals Recall@k here. MRR is over the full ranking (not truncated). Raises ValueError when
    a test user holds more than one distinct item (that is not a leave-one-out split).
    """
    check_same_space(train, test)
    per_user_items = np.diff(binary_csr(test).indptr)
    if per_user_items.size and per_user_items.max() > 1:
        bad = int((per_user_items > 1).sum())
        raise ValueError(
            f"test: {bad} user(s) have more than one held-out item; leave-one-out needs exactly "
            "one (use evaluate_ranking for multi-item test sets)"
        )
    if metrics is None:
        metrics = (f"hr@{k}", f"ndcg@{k}", "mrr")
    return evaluate_ranking(
        model,
        train,
        test,
        k=k,
        metrics=metrics,
        batch_size=batch_size,
        exclude_train=exclude_train,
        history_matrix=history_matrix,
        scorer=scorer,
        users=users,
        per_user=per_user,
    )


# ---- rating prediction -------------------------------------------------------------------------
def evaluate_rating(
    model: Recommender | None,
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    batch_size: int = 1024,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    skip_cold_users: bool = True,
) -> dict[str, Any]:
    """RMSE and MAE of a rating model's scores on the test events that carry a rating.

    The model's score for (user, item) is read as its predicted rating. The history defaults to
    `model.input_matrix(train)` (or `train.matrix(use_ratings=True)` for a bare scorer).
    """
    t0 = time.perf_counter()
    if model is None and scorer is None:
        raise ValueError("model: give a fitted model or a scorer")
    check_same_space(train, test)
    hist = history_rows(model, train, history_matrix, ratings=True)
    has = ~np.isnan(test.rating)
    u, i, r = (
        test.user_idx[has].astype(np.int64),
        test.item_idx[has].astype(np.int64),
        test.rating[has].astype(np.float64),
    )
    if skip_cold_users:
        warm = np.diff(hist.indptr)[u] > 0
        u, i, r = u[warm], i[warm], r[warm]
    if u.size == 0:
        raise ValueError("test: no rated events to evaluate (does the test part carry ratings?)")
    order = np.argsort(u, kind="stable")
    u, i, r = u[order], i[order], r[order]
    uniq, start = np.unique(u, return_index=True)
    pred = np.empty(u.shape[0], dtype=np.float64)
    for sl in batches(uniq.shape[0], batch_size):
        rows = uniq[sl]
        s = scores_for(model, scorer, hist, rows, train.n_items)
        lo = start[sl.start]
        hi = start[sl.stop] if sl.stop < uniq.shape[0] else u.shape[0]
        local = np.searchsorted(rows, u[lo:hi])
        pred[lo:hi] = s[local, i[lo:hi]]
    return {
        "rmse": M.rmse(r, pred),
        "mae": M.mae(r, pred),
        "n_ratings": int(u.shape[0]),
        "n_users": int(uniq.shape[0]),
        "eval_seconds": time.perf_counter() - t0,
    }


# ---- user k-fold cross-validation --------------------------------------------------------------
def cross_validate(
    model_factory: Callable[[], Recommender],
    dataset: InteractionDataset,
    folds: int = 5,
    *,
    k: int = 10,
    metrics: Sequence[str] | None = None,
    seed: int = 42,
    holdout_fraction: float = 0.2,
    order: Literal["time", "random"] = "time",
    batch_size: int = 1024,
) -> dict[str, Any]:
    """User k-fold cross-validation ("strong generalisation") on `splitters.user_kfold_holdout`.

    Each fold: a fresh model from `model_factory()` is fitted (rng=seed) on the other users'
    events only; the fold's users are then served from their fold-in history and judged on their
    held-out events with `evaluate_ranking` (fold-in items masked). Popularity for
    novelty/coverage comes from the fitting data.

    Args:
        model_factory: returns a new, unfitted model.
        dataset: all events.
        folds: number of user folds.
        k, metrics, batch_size: as `evaluate_ranking`.
        seed: fold assignment, random holdout and every fit.
        holdout_fraction, order: per test user, the share of events held out, the latest
            ("time") or a seeded random choice ("random").

    Returns:
        {"folds": [per-fold results with "fit_seconds" and "fold"], "mean": {key: mean},
         "std": {key: sample std}, "n_folds": folds}.
    """
    results = []
    splits = user_kfold_holdout(
        dataset, folds, seed=seed, holdout_fraction=holdout_fraction, order=order
    )
    for f, (train, fold_in, held_out) in enumerate(splits):
        model = model_factory()
        t0 = time.perf_counter()
        model.fit(train, rng=seed)
        fit_s = time.perf_counter() - t0
        res = evaluate_ranking(
            model,
            fold_in,
            held_out,
            k=k,
            metrics=metrics,
            batch_size=batch_size,
            item_counts=train_item_counts(binary_csr(train)),
        )
        res["fit_seconds"] = fit_s
        res["fold"] = f
        results.append(res)
        log.info("cv fold=%d n_users=%d fit_seconds=%.3f", f, res["n_users"], fit_s)
    keys = [
        parse_metric(m, k).key
        for m in (metrics if metrics is not None else default_ranking_metrics(k))
    ]
    mean = {key: float(np.mean([r[key] for r in results])) for key in keys}
    std = {
        key: float(np.std([r[key] for r in results], ddof=1)) if len(results) > 1 else 0.0
        for key in keys
    }
    return {"folds": results, "mean": mean, "std": std, "n_folds": len(results)}
