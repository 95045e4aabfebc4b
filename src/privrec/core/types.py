"""Small shared types: event types and their default weights, user histories, explanations."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class EventType(str, Enum):
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

    Attributes:
        item: the recommended item index.
        kind: "history" (because you interacted with X), "search", "popular", "cold_item".
        text: a short human-readable sentence.
        contributors: item indices of the user's history that contributed most, with weights.
    """

    item: int
    kind: str
    text: str
    contributors: list[tuple[int, float]] = field(default_factory=list)
