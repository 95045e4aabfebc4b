"""Offline replay: estimate an experiment's outcome from held-out data before it goes live.

Each variant's model is fitted on the training part; every held-out shopper is assigned to a
variant exactly as the live test would do it (or, with `paired=True`, shown every variant), gets
that variant's top-k list from their training history, and the held-out events stand in for what
they did next: a held-out item on the list is a click, a held-out purchase on the list is a
conversion worth the item's price (1.0 where the catalogue has no price). The figures then go
through the same statistics as a live experiment (`stats.analyse`). Replay estimates the
direction and rough size of an effect; it cannot see how a new list would change behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from privrec.core.types import EVENT_CODE
from privrec.data.dataset import InteractionDataset
from privrec.experiments.assignment import Experiment, Variant, assign, unit_id
from privrec.experiments.stats import VariantData, analyse
from privrec.models.base import Recommender, top_k_rows

__all__ = ["replay"]

_PURCHASE = EVENT_CODE["purchase"]


def replay(
    experiment: Experiment,
    train: InteractionDataset,
    test: InteractionDataset,
    fit: Callable[[Variant, InteractionDataset], Recommender],
    *,
    k: int = 10,
    paired: bool = False,
    max_users: int | None = None,
    seed: int = 42,
    batch: int = 1024,
) -> dict[str, Any]:
    """Replay `experiment` on (train, test) and report it like a live experiment.

    Args:
        experiment: the experiment (its salt decides the assignment).
        train / test: the split; they share vocabularies (as the splitters make them).
        fit: returns a model fitted on `train` for a variant.
        k: list length.
        paired: show every variant to every held-out shopper (more power; no SRM meaning).
        max_users: evaluate a seeded random subset of the held-out shoppers.
        seed: the subset's seed.
        batch: shoppers scored at once.
    """
    users = np.unique(test.user_idx)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    price = np.ones(test.n_items, np.float64)
    if "price" in test.item_meta:
        p = test.item_meta["price"].to_numpy(np.float64, na_value=np.nan)
        price = np.where(np.isfinite(p) & (p > 0), p, 1.0)
    # held-out items and purchases per shopper
    held: dict[int, set[int]] = {}
    bought: dict[int, set[int]] = {}
    for u, i, t in zip(
        test.user_idx.tolist(), test.item_idx.tolist(), test.event_type.tolist(), strict=True
    ):
        held.setdefault(u, set()).add(i)
        if t == _PURCHASE:
            bought.setdefault(u, set()).add(i)
    all_purchase = bool(len(test.event_type)) and bool(np.all(test.event_type == _PURCHASE))
    names = [v.name for v in experiment.variants]
    groups: dict[str, list[int]] = {n: [] for n in names}
    for u in users.tolist():
        if paired:
            for n in names:
                groups[n].append(u)
        else:
            groups[assign(experiment, train.users.key(u)).name].append(u)
    data = []
    fitted: dict[str, Any] = {}
    for v in experiment.variants:
        model = fit(v, train)
        fitted[v.name] = model
        members = np.asarray(groups[v.name], dtype=np.int64)
        x = model.input_matrix(train).tocsr()
        clicked = 0
        revenue = np.zeros(len(members), np.float64)
        converted = 0
        for s in range(0, len(members), batch):
            rows = members[s : s + batch]
            h = x[rows]
            scores = model.score_matrix(h).astype(np.float64)
            seen_r, seen_c = h.nonzero()
            scores[seen_r, seen_c] = -np.inf
            top = top_k_rows(scores, k)
            for r, u in enumerate(rows.tolist()):
                lst = set(top[r].tolist())
                if lst & held.get(u, set()):
                    clicked += 1
                buys = lst & (held.get(u, set()) if all_purchase else bought.get(u, set()))
                if buys:
                    converted += 1
                    revenue[s + r] = float(sum(price[i] for i in buys))
        data.append(
            VariantData(
                name=v.name,
                impressions=len(members),
                clicked_impressions=clicked,
                revenue_per_unit=revenue,
                converted_units=converted,
            )
        )
    report = analyse(data, experiment.shares)
    report["replay"] = {
        "k": k,
        "held_out_users": len(users),
        "paired": paired,
        "click": "a held-out item of the shopper is on the list",
        "conversion": "a held-out purchase of the shopper is on the list",
        "revenue": "price of the converted items (1.0 where the catalogue has no price)",
    }
    if paired:
        report["srm"]["note"] = (
            "paired replay shows every variant to every shopper; the SRM check does not apply"
        )
        report["srm"]["mismatch"] = False
    return report


def unit_ids(experiment: Experiment, pseudonyms: Mapping[int, str]) -> dict[int, str]:
    """Unit ids of dataset users (for joining replay output with live logs)."""
    return {u: unit_id(experiment.salt, p) for u, p in pseudonyms.items()}
