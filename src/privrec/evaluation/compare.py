"""Train and evaluate several models on one split, timing each: the comparison behind reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import user_kfold_holdout
from privrec.evaluation.metric_spec import default_ranking_metrics, parse_metric
from privrec.evaluation.protocol import evaluate_loo, evaluate_ranking
from privrec.evaluation.report import ModelResult
from privrec.evaluation.scoring import binary_csr, train_item_counts
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy.ledger import PrivacyLedger


@dataclass(frozen=True)
class ModelSpec:
    """A model to compare: registry name, display label and hyper-parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def display(self) -> str:
        """The label shown in tables."""
        return self.label or self.name


def drop_seen_test_items(train: InteractionDataset, test: InteractionDataset) -> InteractionDataset:
    """Remove test events on items the user already had in training (they are masked when ranking,
    so they could never be hit; keeping them would only lower every model's score alike)."""
    n_items = train.n_items
    seen = set((train.user_idx.astype(np.int64) * n_items + train.item_idx).tolist())
    key = test.user_idx.astype(np.int64) * n_items + test.item_idx
    keep = np.fromiter((k not in seen for k in key.tolist()), dtype=bool, count=len(key))
    return test.subset(keep)


def compare_models(
    specs: Sequence[ModelSpec],
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    protocol: str = "ranking",
    k: int = 10,
    metrics: Sequence[str] | None = None,
    seed: int = 42,
    on_step: Callable[[str, str], None] | None = None,
    ledger: PrivacyLedger | None = None,
) -> tuple[list[ModelResult], dict[str, Recommender]]:
    """Fit every spec on `train`, evaluate on `test` with full ranking, and time both.

    Args:
        specs: the models.
        train / test: the split (shared vocabularies).
        protocol: "ranking" (every test item relevant) or "loo" (one held-out item per user).
        k: the cut-off.
        metrics: metric names (the protocol's defaults when None).
        seed: passed to every `fit`.
        on_step: called with (model label, "fit" | "evaluate") before each step (progress bars).
        ledger: charged with every DP model's release (passed to each `fit`).

    Returns:
        (results in spec order, fitted models by label).
    """
    results: list[ModelResult] = []
    fitted: dict[str, Recommender] = {}
    for spec in specs:
        if on_step:
            on_step(spec.display, "fit")
        model = create_model(spec.name, **dict(spec.params))
        t0 = time.perf_counter()
        model.fit(train, rng=seed, ledger=ledger)
        fit_s = time.perf_counter() - t0
        if on_step:
            on_step(spec.display, "evaluate")
        if protocol == "loo":
            res = evaluate_loo(model, train, test, k=k, metrics=metrics)
        elif protocol == "ranking":
            res = evaluate_ranking(model, train, test, k=k, metrics=metrics)
        else:
            raise ValueError("protocol must be 'ranking' or 'loo'")
        results.append(
            ModelResult.from_eval(
                spec.display,
                res,
                train_seconds=fit_s,
                params=dict(spec.params),
                privacy=model.privacy,
            )
        )
        fitted[spec.display] = model
    return results, fitted


def cross_validate_models(
    specs: Sequence[ModelSpec],
    dataset: InteractionDataset,
    folds: int,
    *,
    k: int = 10,
    seed: int = 42,
    ledger: PrivacyLedger | None = None,
    on_step: Callable[[str, int], None] | None = None,
    choose: Callable[[ModelSpec, InteractionDataset], tuple[ModelSpec, dict[str, Any]]]
    | None = None,
) -> dict[str, dict[str, Any]]:
    """User k-fold cross-validation of every spec on the same folds (as `cross_validate`).

    Each fold fits a fresh model on the other users' events (DP releases charged to `ledger`,
    which `cross_validate` cannot do) and ranks every item for the fold's users from their
    fold-in history, judged on their held-out latest events.

    Args:
        specs: the models.
        dataset: all events.
        folds: number of user folds (at least 2).
        k: the cut-off of the default ranking metrics.
        seed: fold assignment and every fit.
        ledger: charged with every DP model's release.
        on_step: called with (model label, fold number) before each fold's fit.
        choose: given (spec, the fold's training part), the spec to fit and what was chosen
            (hyper-parameter tuning inside each fold, so it never sees the fold's held-out users).

    Returns:
        label -> {"mean": {metric: mean}, "std": {metric: sample std}, "folds": [per fold],
        "params": the spec's parameters}; with `choose`, each fold holds "params" and "tuning".
    """
    if folds < 2:
        raise ValueError(f"folds: {folds} is fewer than 2")
    splits = list(user_kfold_holdout(dataset, folds, seed=seed))
    keys = [parse_metric(m, k).key for m in default_ranking_metrics(k)]
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        per_fold: list[dict[str, Any]] = []
        for f, (train, fold_in, held_out) in enumerate(splits):
            if on_step:
                on_step(spec.display, f)
            fold_spec, chosen = choose(spec, train) if choose else (spec, None)
            model = create_model(fold_spec.name, **dict(fold_spec.params))
            t0 = time.perf_counter()
            model.fit(train, rng=seed, ledger=ledger)
            fit_s = time.perf_counter() - t0
            res = evaluate_ranking(
                model,
                fold_in,
                held_out,
                k=k,
                item_counts=train_item_counts(binary_csr(train)),
            )
            row: dict[str, Any] = {"fold": f, "fit_seconds": fit_s, **{m: res[m] for m in keys}}
            if chosen is not None:
                row["params"] = dict(fold_spec.params)
                row["tuning"] = chosen
            per_fold.append(row)
        out[spec.display] = {
            "mean": {m: float(np.mean([r[m] for r in per_fold])) for m in keys},
            # the sample spread across folds: how much the figure moves with the users drawn
            "std": {m: float(np.std([r[m] for r in per_fold], ddof=1)) for m in keys},
            "folds": per_fold,
            "params": dict(spec.params),
        }
    return out
