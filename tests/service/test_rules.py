"""Business rules on scores: filters, exclusions, MMR, category cap, still k items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import ValidationError
from privrec.data.catalogue import ItemTable
from privrec.service.rules import Rules, _ranked, apply_rules


def table(n: int = 30) -> ItemTable:
    cats = ["A > x", "A > y", "B > z"]
    meta = pd.DataFrame(
        {
            "item": [f"i{j}" for j in range(n)],
            "title": [f"Item {j}" for j in range(n)],
            "category": [cats[j % 3] for j in range(n)],
            "brand": ["b1" if j % 2 else "b2" for j in range(n)],
            "price": [float(j) if j % 5 else np.nan for j in range(n)],
            "in_stock": [j % 7 != 0 for j in range(n)],
        }
    )
    return ItemTable.from_meta(meta, popularity=np.arange(n, dtype=float))


def test_plain_top_k_and_exclusions() -> None:
    t = table()
    s = np.linspace(1, 0, 30)  # item 0 best
    res = apply_rules(
        s, 5, Rules(exclude_items=(1,)), t, purchased=np.array([0]), seen=np.array([0, 2])
    )
    assert res.items.tolist() == [3, 4, 5, 6, 7]
    res = apply_rules(
        s,
        3,
        Rules(exclude_purchased=False, exclude_seen=False),
        t,
        purchased=np.array([0]),
        seen=np.array([0]),
    )
    assert res.items.tolist() == [0, 1, 2]


def test_filters() -> None:
    t = table()
    s = np.linspace(1, 0, 30)
    r = Rules(include_categories=("A",), in_stock=True, price_min=3, price_max=20)
    res = apply_rules(s, 30, r, t)
    for i in res.items.tolist():
        assert t.category_name(i).startswith("A") and t.in_stock[i] and 3 <= t.price[i] <= 20
    assert len(res.items) == res.allowed
    res = apply_rules(s, 5, Rules(exclude_categories=("a > x",)), t)
    assert all(t.category_name(i) != "A > x" for i in res.items)


def test_zero_scores_are_filled_by_popularity_still_k() -> None:
    t = table()
    s = np.zeros(30)
    s[3] = 1.0
    res = apply_rules(s, 4, Rules(), t)
    assert res.items.tolist() == [3, 29, 28, 27] and res.filled.tolist() == [
        False,
        True,
        True,
        True,
    ]


def test_category_cap_and_mmr_keep_k() -> None:
    t = table()
    s = (
        np.where(np.arange(30) % 3 == 0, 2.0, 1.0) - np.arange(30) * 1e-3
    )  # category A > x dominates
    capped = apply_rules(s, 6, Rules(category_cap=2), t)
    cats = [t.category_name(i) for i in capped.items]
    assert len(capped.items) == 6 and max(cats.count(c) for c in set(cats)) == 2
    plain = apply_rules(s, 6, Rules(), t)
    assert len({t.category_name(i) for i in plain.items}) == 1
    mmr = apply_rules(s, 6, Rules(diversity=0.8), t)
    assert len(mmr.items) == 6 and len({t.category_name(i) for i in mmr.items}) == 3
    # a cap the catalogue cannot meet returns what is possible
    few = apply_rules(s, 10, Rules(category_cap=1), t)
    assert len(few.items) == 3


def test_invalid_rules_name_the_field() -> None:
    with pytest.raises(ValidationError, match="diversity"):
        Rules(diversity=2)
    with pytest.raises(ValidationError, match="price_min"):
        Rules(price_min=5, price_max=1)
    with pytest.raises(ValidationError, match="category_cap"):
        Rules(category_cap=0)


def test_ranked_matches_a_full_sort() -> None:
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 3000))
        s = (
            rng.integers(0, 5, n).astype(np.float32)
            if trial % 2
            else rng.random(n).astype(np.float32)
        )
        if trial % 5 == 0:
            s[rng.integers(0, n, n // 3)] = -np.inf
        pop = rng.integers(0, 4, n).astype(float)
        m = int(rng.integers(1, 30))
        fin = np.flatnonzero(np.isfinite(s))
        assert (
            _ranked(s, pop, m).tolist() == fin[np.lexsort((fin, -pop[fin], -s[fin]))][:m].tolist()
        )


def test_ranking_fast_path_equals_search() -> None:
    t = table()
    a = apply_rules(
        t.popularity, 5, Rules(), t, seen=np.array([29]), ranking=t.popularity_ranking()
    )
    b = apply_rules(t.popularity, 5, Rules(), t, seen=np.array([29]))
    assert a.items.tolist() == b.items.tolist() == [28, 27, 26, 25, 24]
