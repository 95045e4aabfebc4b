"""The hybrid's cold-start routes: which weights serve a user, how new items are marked, and why.

Routes:
    "cold_user"       a history with at most `cold_user_max_items` distinct items, an empty one
                      included: served from `cold_components` only, with their own weights;
    "warm"            everything else: all components with the warm weights;
    "cold_item-boost" (per item, for a warm user) an item with no training interaction: only its
                      content score and the new-item boost speak for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from privrec.core.types import Explanation, UserHistory
from privrec.models.base import Recommender

__all__ = ["ROUTES", "HybridResult", "cold_rows", "explain_route", "is_new_item", "item_routes"]

ROUTES: tuple[str, ...] = ("warm", "cold_user", "cold_item-boost")


@dataclass
class HybridResult:
    """Recommendations with the route that produced them.

    Attributes:
        items, scores: the top-k item indices and hybrid scores, best first.
        route: "warm" or "cold_user" (the user's route).
        item_routes: per item, "cold_item-boost" for items with no training interaction, else the
            user's route.
        weights: the component weights the route used.
    """

    items: np.ndarray
    scores: np.ndarray
    route: str
    item_routes: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)


def cold_rows(h: sp.csr_matrix, cold_user_max_items: int) -> np.ndarray:
    """Which history rows take the cold-user route (at most `cold_user_max_items` items)."""
    return np.diff(h.indptr) <= cold_user_max_items


def is_new_item(item_events: np.ndarray, item: int) -> bool:
    """True for an item with no training interaction (or outside the training catalogue)."""
    item = int(item)
    return not (0 <= item < item_events.shape[0]) or item_events[item] == 0


def item_routes(route: str, items: np.ndarray, item_events: np.ndarray) -> list[str]:
    """Each recommended item's route: "cold_item-boost" for a warm user's new items."""
    return [
        "cold_item-boost" if route == "warm" and is_new_item(item_events, i) else route
        for i in items.tolist()
    ]


def explain_route(
    route: str,
    parts: dict[str, float],
    components: dict[str, Recommender],
    history: UserHistory,
    item: int,
) -> Explanation:
    """Why `item` is recommended on `route`, from each component's weighted part of its score.

    A cold user hears the strongest component's history or search reason (else "popular"); a new
    item its content reason; otherwise the strongest component explains, or the content one
    where the strongest cannot say why.
    """
    content = components["content"]
    if route == "cold_user":
        best = max(parts, key=lambda n: parts[n]) if parts else "popularity"
        if best != "popularity":
            e = components[best].explain(history, item)
            if e.kind in ("history", "search"):
                return Explanation(
                    item=item,
                    kind="cold_user",
                    text=f"new here: {e.text}",
                    contributors=e.contributors,
                    actions=e.actions,
                )
        return Explanation(
            item=item, kind="cold_user", text="new here: popular in the shop", contributors=[]
        )
    if route == "cold_item-boost":
        e = content.explain(history, item)
        text = (
            f"new in the shop, {e.text}" if e.kind in ("history", "search") else "new in the shop"
        )
        return Explanation(
            item=item,
            kind="cold_item",
            text=text,
            contributors=e.contributors,
            actions=e.actions,
        )
    best = max(parts, key=lambda n: parts[n]) if parts else "popularity"
    e = components[best].explain(history, item)
    if e.kind == "model" and best != "content":  # the strongest part cannot say why: try the text
        alt = content.explain(history, item)
        if alt.kind != "model":
            return alt
    return e
