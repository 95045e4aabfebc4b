"""Popularity: global counts, weights, time decay and the per-category blend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.popularity import Popularity

DAY = 86400.0


def shop() -> InteractionDataset:
    # item x: 3 viewers; item y: 2 buyers; item z: 1 viewer who viewed it 5 times
    rows = [
        ("u1", "x", "view", 0),
        ("u2", "x", "view", 1),
        ("u3", "x", "view", 2),
        ("u1", "y", "purchase", 3),
        ("u2", "y", "purchase", 4),
    ]
    rows += [("u4", "z", "view", 5 + t) for t in range(5)]
    ev = pd.DataFrame(rows, columns=["user", "item", "type", "ts"])
    meta = pd.DataFrame(
        {"item": ["x", "y", "z", "w"], "category": ["A > a1", "B > b1", "A > a2", None]}
    )
    return InteractionDataset.from_events(ev, item_meta=meta)


def test_binary_counts_users_once_per_item() -> None:
    d = shop()
    m = Popularity(binary=True).fit(d)
    x, y, z, w = (d.items.index(k) for k in "xyzw")
    np.testing.assert_array_equal(m.popularity[[x, y, z, w]], [3, 2, 1, 0])
    assert m.recommend(UserHistory.of([]), k=4)[0].tolist() == [x, y, z, w]


def test_event_weights_rank_purchases_above_views() -> None:
    d = shop()
    m = Popularity().fit(d)  # view 1, purchase 5 by default
    x, y, z = (d.items.index(k) for k in "xyz")
    np.testing.assert_array_equal(m.popularity[[x, y, z]], [3, 10, 1])
    assert m.recommend(UserHistory.of([]), k=2)[0].tolist() == [y, x]
    m = Popularity(event_weights={"view": 1.0, "purchase": 1.0}).fit(d)
    np.testing.assert_array_equal(m.popularity[[x, y]], [3, 2])


def test_time_decay_halves_per_half_life() -> None:
    ev = pd.DataFrame(
        {
            "user": ["a", "b", "c"],
            "item": ["old", "old", "new"],
            "type": "view",
            "ts": [0.0, 0.0, 20 * DAY],
        }
    )
    d = InteractionDataset.from_events(ev)
    m = Popularity(half_life_days=10.0, binary=True).fit(d)
    old, new = d.items.index("old"), d.items.index("new")
    np.testing.assert_allclose(m.popularity[[old, new]], [0.5, 1.0], rtol=1e-6)
    assert Popularity(binary=True).fit(d).popularity[old] == 2.0


def test_by_category_prefers_the_users_categories() -> None:
    d = shop()
    x, y, z = (d.items.index(k) for k in "xyz")
    m = Popularity(binary=True, by_category=True, category_depth=1).fit(d)
    assert m.categories == ["A", "B"]
    # a user with history in A: category A items first even though y is more popular than z
    s = m.score(UserHistory.of([x]))
    assert s[z] > s[y]
    # by the formula: (1 - 0.8) * g + 0.8 * share * within-category popularity
    np.testing.assert_allclose(s[z], 0.2 * 1 / 3 + 0.8 * 1.0 * (1 / 3), rtol=1e-6)
    np.testing.assert_allclose(s[y], 0.2 * 2 / 3, rtol=1e-6)
    # no history: the global ranking scaled by (1 - category_weight)
    np.testing.assert_allclose(m.score(UserHistory.of([])), 0.2 * m.popularity / 3, rtol=1e-6)
    e = m.explain(UserHistory.of([x]), z)
    assert e.kind == "popular" and e.text == "popular in A" and e.contributors[0][0] == x
    assert m.explain(UserHistory.of([x]), y).text == "popular"


def test_full_category_path_is_the_default() -> None:
    m = Popularity(by_category=True).fit(shop())
    assert m.categories == ["A > a1", "A > a2", "B > b1"]


@pytest.mark.parametrize("bad", [{"category_weight": 1.5}, {"half_life_days": 0}])
def test_invalid_values_are_rejected(bad: dict) -> None:
    from privrec.core.errors import ConfigError

    with pytest.raises(ConfigError):
        Popularity(**bad)
