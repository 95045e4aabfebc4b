"""Small shared types: event types and their default weights, user histories, explanations.

Also the two history helpers every layer shares: the strongest value per key (`strongest`, what
"max" aggregation of a history means) and the strongest thing a user did with each item
(`strongest_actions`, what an explanation names).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class EventType(str, Enum):  # noqa: UP042  (StrEnum would change str(member) for callers)
    """The behaviours privrec accepts at the gate."""

    VIEW = "view"
    SEARCH = "search"
    CART = "cart"
    FAVORITE = "favorite"
    PURCHASE = "purchase"
    RATING = "rating"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)
# Integer codes used in columnar storage; order is part of the stored format, so append only.
EVENT_CODE: dict[str, int] = {t: i for i, t in enumerate(EVENT_TYPES)}

# Event types by the intent they show, strongest first: when a user did several things with one
# item, an explanation names the first of them here.
INTENT_ORDER: tuple[str, ...] = ("purchase", "favorite", "cart", "rating", "search", "view")
_INTENT_RANK: dict[str, int] = {t: r for r, t in enumerate(INTENT_ORDER)}

# Stronger intent gets more weight: view < search < cart < favorite < purchase (design.md).
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "search": 1.0,
    "cart": 3.0,
    "favorite": 4.0,
    "purchase": 5.0,
    "rating": 5.0,
}


@dataclass(frozen=True)
class UserHistory:
    """What a model knows about one user at request time: their history, oldest first.

    Attributes:
        items: dense item indices, chronological.
        weights: optional per-event weights (event type or rating), same length as `items`.
        event_types: optional per-event type codes (see EVENT_CODE).
        query_embeddings: optional search query embeddings, one row per query.
    """

    items: np.ndarray
    weights: np.ndarray | None = None
    event_types: np.ndarray | None = None
    query_embeddings: np.ndarray | None = None

    @classmethod
    def of(
        cls, items: list[int] | np.ndarray, weights: list[float] | np.ndarray | None = None
    ) -> UserHistory:
        """Build a history from plain lists."""
        it = np.asarray(items, dtype=np.int64)
        w = None if weights is None else np.asarray(weights, dtype=np.float32)
        if w is not None and w.shape != it.shape:
            raise ValueError("weights must have the same length as items")
        return cls(items=it, weights=w)

    def __len__(self) -> int:
        return int(self.items.shape[0])


@dataclass
class Explanation:
    """Why an item was recommended, from the user's own history and public item data only.

    Models fill in the facts (contributors and what the user did with them); the shopper-facing
    wording with verbs and titles is `privrec.explain`'s job.

    Attributes:
        item: the recommended item index.
        kind: "history" (history items drove it), "search", "popular", "cold_user",
            "cold_item" or "model" (the model cannot say more).
        text: a short neutral sentence (no verbs of what the user did; see `privrec.explain`).
        contributors: item indices of the user's history that contributed most, with weights,
            largest first.
        actions: per contributor item, the strongest event type the user had with it (absent
            where the history carries no event types).
    """

    item: int
    kind: str
    text: str = ""
    contributors: list[tuple[int, float]] = field(default_factory=list)
    actions: dict[int, str] = field(default_factory=dict)


def strongest(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct keys (ascending), the largest value of each, and the entry that holds it.

    This is "keep the strongest event per item" (aggregate="max"): a history item viewed and
    then bought counts once, with the purchase's weight.

    Args:
        keys: one key per entry (e.g. item indices, or row * n_items + item).
        values: one value per entry.

    Returns:
        (keys, values, positions): positions index the input entries; among equal values the
        latest entry wins.
    """
    keys = np.asarray(keys)
    values = np.asarray(values)
    if keys.shape != values.shape:
        raise ValueError("keys and values must have the same length")
    if not keys.size:
        return keys.copy(), values.copy(), np.zeros(0, np.int64)
    order = np.lexsort((np.arange(keys.size), values, keys))
    k = keys[order]
    last = np.ones(k.size, dtype=bool)
    last[:-1] = k[1:] != k[:-1]
    pos = order[last].astype(np.int64)
    return keys[pos], values[pos], pos


_actions_memo = threading.local()


def strongest_actions(history: UserHistory) -> dict[int, str]:
    """Per history item, the strongest-intent event type the user had with it (INTENT_ORDER).

    Empty when the history carries no event types (then nothing is known of what the user did).
    """
    types = history.event_types
    if types is None or len(types) != len(history):
        return {}
    # a request asks this of the same history once per explained item: kept per thread for
    # the latest history object (with the same arrays), handed out as copies
    last = getattr(_actions_memo, "last", None)
    if last is not None and last[0] is history and last[1] is history.items and last[2] is types:
        return dict(last[3])
    out: dict[int, str] = {}
    for it, code in zip(history.items.tolist(), np.asarray(types).tolist(), strict=True):
        name = EVENT_TYPES[int(code)] if 0 <= int(code) < len(EVENT_TYPES) else "view"
        if it not in out or _INTENT_RANK[name] < _INTENT_RANK[out[it]]:
            out[it] = name
    _actions_memo.last = (history, history.items, types, dict(out))
    return out
