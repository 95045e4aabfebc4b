"""Explanations from the user's own history and public item data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from privrec.core.types import EVENT_CODE, Explanation, UserHistory, strongest
from privrec.data.catalogue import ItemTable
from privrec.explain.explanations import action_phrase, describe, explain_items


class Fake:
    """An item-item model reached only through the contract: its name says nothing."""

    name = "anything"

    def __init__(self, b: np.ndarray) -> None:
        self.b = b.astype(np.float64)
        self.n_items = b.shape[0]
        self.explained: list[int] = []

    def contributions(self, history: UserHistory, items: np.ndarray) -> np.ndarray:
        w = np.ones(len(history)) if history.weights is None else history.weights
        it, top, pos = strongest(history.items, np.asarray(w, np.float64))
        out = np.zeros((len(items), len(history)))
        out[:, pos] = self.b[np.ix_(it, np.asarray(items))].T * top[None, :]
        return out


class Opaque(Fake):
    """A model that cannot attribute its score: asked item by item through `explain`."""

    def contributions(self, history: UserHistory, items: np.ndarray) -> None:
        return None

    def explain(self, history: UserHistory, item: int) -> Explanation:
        self.explained.append(int(item))
        return Explanation(item=item, kind="history", contributors=[(2, 0.4), (0, 0.1)])


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


def test_models_without_contributions_are_asked_through_explain() -> None:
    h = UserHistory(
        items=np.array([0, 2]),
        weights=np.array([1.0, 5.0], np.float32),
        event_types=np.array([EVENT_CODE["view"], EVENT_CODE["purchase"]], np.int8),
    )
    m = Opaque(np.zeros((5, 5)))
    (e,) = explain_items(m, h, [3], _table([1, 1, 1, 1, 1]))
    assert m.explained == [3]
    assert e.kind == "history" and e.text == "because you bought 'Title 2' and viewed 'Title 0'"


def test_describe_words_a_model_explanation() -> None:
    e = Explanation(
        item=4,
        kind="history",
        text="neutral",
        contributors=[(1, 0.5), (3, 0.2), (2, 0.1)],
        actions={1: "purchase", 3: "cart"},
    )
    assert describe(e) == "because you bought item 1 and added item 3 to your cart"
    titles = ["A", "B", "C", "D", "E"]
    assert describe(e, titles, n=3) == (
        "because you bought 'B', added 'D' to your cart and interacted with 'C'"
    )
    cold = Explanation(item=4, kind="cold_user", text="x", contributors=[(0, 1.0)])
    assert describe(cold, titles) == "new here: because you interacted with 'A'"
    assert describe(Explanation(item=4, kind="popular", text="popular")) == "popular"
    assert action_phrase("favorite", "'A'") == "saved 'A'"


def test_a_search_event_is_never_worded_as_the_query() -> None:
    from privrec.explain.explanations import action_phrase

    text = action_phrase("search", "'Tinker Town Robot Kit'")
    assert "searched for" not in text and "found 'Tinker Town Robot Kit'" in text
