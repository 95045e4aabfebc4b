"""Fixtures for the model tests: a small synthetic shop with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary

N_PER_GROUP = 12  # items 0..11 are group A, 12..23 group B; item "cold" has no events


def group_items(group: int) -> np.ndarray:
    """The item indices of group 0 (A) or 1 (B) in `two_groups` (keys are assigned in order)."""
    return np.arange(group * N_PER_GROUP, (group + 1) * N_PER_GROUP)


def make_two_groups(seed: int = 0, users_per_group: int = 20) -> InteractionDataset:
    """Two disjoint user groups on two disjoint item sets, with views and purchases.

    Group A users only touch items a00..a11, group B users only b00..b11; within a group some
    items are more popular than others. Item keys are registered in index order (a00.., b00..,
    then "cold") so `group_items` gives their indices.
    """
    rng = np.random.default_rng(seed)
    keys = (
        [f"a{i:02d}" for i in range(N_PER_GROUP)]
        + [f"b{i:02d}" for i in range(N_PER_GROUP)]
        + ["cold"]
    )
    rows = []
    ts = 1_700_000_000.0
    popularity = np.linspace(2.0, 0.5, N_PER_GROUP)
    popularity /= popularity.sum()
    for prefix in "ab":
        for u in range(users_per_group):
            user = f"u{prefix}{u:02d}"
            n = int(rng.integers(4, 8))
            items = rng.choice(N_PER_GROUP, size=n, replace=False, p=popularity)
            for it in items:
                ts += 60.0
                kind = "purchase" if rng.random() < 0.3 else "view"
                rows.append((user, f"{prefix}{it:02d}", kind, ts))
    events = pd.DataFrame(rows, columns=["user", "item", "type", "ts"])
    meta = pd.DataFrame(
        {
            "item": keys,
            "title": [f"item {k}" for k in keys],
            "category": ["Shop > Alpha"] * N_PER_GROUP + ["Shop > Beta"] * N_PER_GROUP + [None],
        }
    )
    # a fixed item order: built from the events alone, keys would be ordered by first appearance
    return InteractionDataset.from_events(
        events, item_meta=meta, items=Vocabulary(keys), name="two-groups"
    )


@pytest.fixture(scope="session")
def two_groups() -> InteractionDataset:
    """The synthetic two-group dataset (shared, read-only)."""
    return make_two_groups()


def removed_dataset(ds: InteractionDataset, users: list[int]) -> InteractionDataset:
    """The users' events re-encoded in `ds`'s item vocabulary, as the service hands erased users'
    trained events to `Recommender.forget` (built from keys, not by slicing `ds`)."""
    mask = np.isin(ds.user_idx, users)
    user_keys, item_keys = ds.users.keys, ds.items.keys
    events = pd.DataFrame(
        {
            "user": [user_keys[u] for u in ds.user_idx[mask].tolist()],
            "item": [item_keys[i] for i in ds.item_idx[mask].tolist()],
            "type": ds.event_type[mask],
            "ts": ds.ts[mask],
        }
    )
    return InteractionDataset.from_events(events, items=ds.items, event_weights=ds.event_weights)
