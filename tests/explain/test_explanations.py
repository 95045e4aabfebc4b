"""Explanations from the user's own history and public item data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from privrec.core.types import EVENT_CODE, UserHistory
from privrec.explain.explanations import explain_items
from privrec.models.rules import ItemTable


class Fake:
    """An EASE-shaped model: item-item weights, so contributions are exact."""

    name = "ease"

    def __init__(self, b: np.ndarray) -> None:
        self.weights = b.astype(np.float32)
        self.n_items = b.shape[0]
        self.config = type("C", (), {"binary": False})()


def _table(pop: list[float]) -> ItemTable:
    n = len(pop)
    meta = pd.DataFrame(
        {
            "item": [f"i{j}" for j in range(n)],
            "title": [f"Title {j}" for j in range(n)],
            "category": ["Home > Decor"] * (n - 1) + ["Toys > Games"],
            "brand": ["x"] * n,
        }
    )
    return ItemTable.from_meta(meta, popularity=np.asarray(pop, dtype=float))


def test_history_kinds_name_titles_and_actions() -> None:
    b = np.zeros((5, 5))
    b[0, 3], b[1, 3], b[2, 3] = 0.1, 0.9, 0.5
    h = UserHistory(
        items=np.array([0, 1, 2, 1]),
        weights=np.array([1, 1, 1, 5], np.float32),
        event_types=np.array(
            [EVENT_CODE["view"], EVENT_CODE["view"], EVENT_CODE["cart"], EVENT_CODE["purchase"]],
            np.int8,
        ),
    )
    (e,) = explain_items(Fake(b), h, [3], _table([1, 1, 1, 1, 1]))
    assert e.kind == "history"
    assert e.text == "because you bought 'Title 1' and added 'Title 2' to your cart"
    assert [c["item"] for c in e.because] == ["i1", "i2"]


def test_popular_cold_search_context_and_anonymous() -> None:
    b = np.zeros((5, 5))
    b[0, 2] = 1.0
    h = UserHistory(
        items=np.array([0]),
        weights=np.array([1.0], np.float32),
        event_types=np.array([EVENT_CODE["view"]], np.int8),
    )
    t = _table([3, 2, 1, 0, 0])
    out = explain_items(Fake(b), h, [1, 3, 4], t)
    assert out[0].kind == "popular" and out[0].text == "popular in Decor"
    assert out[1].kind == "cold_item" and out[1].text == "new arrival similar to 'Title 0'"
    assert out[2].kind == "cold_item" and out[2].text == "new arrival in Games"
    (s,) = explain_items(
        None, UserHistory.of([]), [2], t, personalized=False, query="decor", matched=[True]
    )
    assert s.kind == "search" and s.text == "matches your search 'decor'"
    (c,) = explain_items(Fake(b), h, [2], t, context_item=0)
    assert c.kind == "context" and c.text == "because you are looking at 'Title 0'"
    anon = explain_items(Fake(b), h, [2], t, personalized=False)
    assert anon[0].kind == "popular" and "Title 0" not in anon[0].text
