"""Train and evaluate several models on one split, timing each: the comparison behind reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privrec.data.dataset import InteractionDataset
from privrec.evaluation.protocol import evaluate_loo, evaluate_ranking
from privrec.evaluation.report import ModelResult
from privrec.models.base import Recommender
from privrec.models.zoo import create_model


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
        model.fit(train, rng=seed)
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
