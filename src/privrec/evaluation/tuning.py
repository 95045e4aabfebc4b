"""Hyper-parameter search on a validation split carved from the training part only.

The caller passes `train` and `valid`, both cut from the training part (for example a
leave-one-out or stratified split applied again to the training set); the test part never enters
here. Every configuration is fitted with the same seed, so differences come from the parameters,
and the same inputs give the same table and the same winner.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.evaluation.protocol import (
    evaluate_loo,
    evaluate_ranking,
    evaluate_rating,
    parse_metric,
)
from privrec.models.base import Recommender

log = logging.getLogger(__name__)

__all__ = ["LOWER_IS_BETTER", "grid_search", "iter_grid"]

# Metrics where a smaller value wins.
LOWER_IS_BETTER = frozenset({"rmse", "mae"})


def iter_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """All combinations of `grid` in a fixed order: keys and values as given, last key fastest."""
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"grid[{key!r}]: give a list of values, got {type(values).__name__}")
        if len(values) == 0:
            raise ValueError(f"grid[{key!r}]: the list of values is empty")
    keys = list(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))
    ]


def _metric_key(metric: str, k: int, protocol: str) -> str:
    m = metric.strip().lower()
    if protocol == "rating":
        if m not in LOWER_IS_BETTER:
            raise ValueError(f"metric: the rating protocol reports rmse and mae, not {metric!r}")
        return m
    return parse_metric(m, k).key


def grid_search(
    model_cls: type[Recommender] | Callable[..., Recommender],
    grid: Mapping[str, Sequence[Any]],
    train: InteractionDataset,
    valid: InteractionDataset,
    *,
    metric: str = "ndcg@10",
    k: int = 10,
    protocol: str = "ranking",
    fixed: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    seed: int = 42,
    batch_size: int = 1024,
    history_matrix: sp.spmatrix | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit one model per grid point on `train`, score it on `valid`, pick the best by `metric`.

    Args:
        model_cls: a Recommender class (or any callable taking keyword parameters).
        grid: parameter name -> list of values to try.
        train: the fitting part (carved from the training data).
        valid: the validation part (also carved from the training data; never the test set).
        metric: what to optimise, e.g. "ndcg@10", "recall@20", "map", "hr@10", "rmse".
        k: default cut-off for metric names without "@k".
        protocol: "ranking" (evaluate_ranking), "loo" (evaluate_loo) or "rating" (evaluate_rating).
        fixed: parameters passed to every configuration unchanged.
        metrics: further metrics to report in the table (the optimised one is always included).
        seed: passed as `rng` to every `fit`.
        batch_size: users per scoring batch.
        history_matrix: the history rows the model expects on `valid` (default as the protocol).

    Returns:
        (best_params, table): the winning grid point (without `fixed`) and one row per grid point
        in grid order with the parameters, every metric, "fit_seconds", "eval_seconds" and "rank"
        (1 = best). Ties go to the earlier grid point. Failed fits raise.
    """
    if protocol not in ("ranking", "loo", "rating"):
        raise ValueError("protocol: must be 'ranking', 'loo' or 'rating'")
    fixed = dict(fixed or {})
    clash = set(fixed) & set(grid)
    if clash:
        raise ValueError(
            f"fixed: {sorted(clash)} also appear in grid; give each parameter in one place"
        )
    key = _metric_key(metric, k, protocol)
    lower = key in LOWER_IS_BETTER
    if protocol == "rating":
        wanted: list[str] = []
    else:
        wanted = [parse_metric(m, k).key for m in (metrics or ())]
        if key not in wanted:
            wanted.insert(0, key)

    rows = []
    points = iter_grid(grid)
    for n, params in enumerate(points):
        model = model_cls(**fixed, **params)
        t0 = time.perf_counter()
        model.fit(train, rng=seed)
        fit_s = time.perf_counter() - t0
        if protocol == "ranking":
            res = evaluate_ranking(
                model,
                train,
                valid,
                k=k,
                metrics=wanted,
                batch_size=batch_size,
                history_matrix=history_matrix,
            )
        elif protocol == "loo":
            res = evaluate_loo(
                model,
                train,
                valid,
                k=k,
                metrics=wanted,
                batch_size=batch_size,
                history_matrix=history_matrix,
            )
        else:
            res = evaluate_rating(
                model, train, valid, batch_size=batch_size, history_matrix=history_matrix
            )
        shown = ("rmse", "mae") if protocol == "rating" else wanted
        row = {
            **params,
            **{m: res[m] for m in shown},
            "n_users": res["n_users"],
            "fit_seconds": fit_s,
            "eval_seconds": res["eval_seconds"],
        }
        rows.append(row)
        log.info(
            "grid point=%d/%d %s=%.6f fit_seconds=%.3f", n + 1, len(points), key, res[key], fit_s
        )

    table = pd.DataFrame(rows)
    vals = table[key].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals)
    score = np.where(bad, math.inf if lower else -math.inf, vals)
    # rank 1 = best; stable, so equal values keep grid order (the earlier point wins)
    order = np.argsort(score if lower else -score, kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    table["rank"] = ranks
    best = dict(points[int(order[0])])
    return best, table
