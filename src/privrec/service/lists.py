"""Small pieces of building a list: the size check, the context item, hidden items."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from privrec.core.errors import ValidationError
from privrec.core.types import EVENT_CODE, UserHistory

MAX_K = 1000
_VIEW = EVENT_CODE["view"]


def check_k(k: int) -> None:
    """ValidationError unless 1 <= k <= MAX_K."""
    if k < 1 or k > MAX_K:
        raise ValidationError("k", f"{k} is out of range; ask for 1 to {MAX_K} items")


def with_context(history: UserHistory, ctx: int, weights: Mapping[str, float]) -> UserHistory:
    """The history plus the item the shopper is looking at, weighted like a purchase."""
    n = len(history)
    w = history.weights if history.weights is not None else np.ones(n, np.float32)
    t = history.event_types if history.event_types is not None else np.zeros(n, np.int8)
    return UserHistory(
        items=np.append(history.items, ctx).astype(np.int64),
        weights=np.append(w, float(weights.get("purchase", 5.0))).astype(np.float32),
        event_types=np.append(t, _VIEW).astype(np.int8),
    )


def visible(scores: np.ndarray, hidden: np.ndarray | None) -> np.ndarray:
    """`scores` with the items deleted from the catalogue at -inf (never listed)."""
    if hidden is None:
        return scores
    out = np.array(scores, dtype=np.float64, copy=True)
    out[hidden] = -np.inf
    return out
