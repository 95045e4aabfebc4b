"""Explanations for every recommended item (layer 5), from the user's own history and public
item data only.

Kinds, in the order they are tried for one item:

- "rule": a shop rule placed the item (a pin): "placed by a shop rule", and nothing personal,
  since the shopper's history did not put it there.
- "search": the item matched the shopper's query ("matches your search 'q'").
- "context": the shopper is looking at an item that drives this one ("because you are looking
  at 'X'").
- "cold_item": a new arrival nobody has touched yet ("new arrival similar to 'X'", X from the
  shopper's history in the same category).
- "history": the history items that contributed most ("because you bought 'X' and viewed 'Y'").
- "popular": the fallback ("popular in <category>").

Contributions come from the model itself (`Recommender.contributions`: each history entry's
additive share of each item's score, for all k items at once); a model that cannot attribute its
score is asked item by item through its own `explain`. The texts name catalogue titles (public
data) and the shopper's own actions only.

This module is the one place that words what the shopper did ("bought", "viewed", ...):
`describe` turns a model's `Explanation` (contributors and actions) into a sentence, and
`explain_items` does it for a served list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privrec.core.types import Explanation, UserHistory, strongest_actions
from privrec.data.catalogue import ItemTable
from privrec.models.base import Recommender

__all__ = [
    "RULE_TEXT",
    "ItemExplanation",
    "action_phrase",
    "describe",
    "explain_items",
    "history_contributions",
    "placed_by_rule",
    "popular",
    "rule_placed",
    "strongest_actions",
]

# What the shopper did, by event type (see core.types.INTENT_ORDER for which one is named).
_ACTIONS: dict[str, str] = {
    "purchase": "bought {t}",
    "favorite": "saved {t}",
    "cart": "added {t} to your cart",
    "rating": "rated {t}",
    # a search event names the product the shopper chose from a search's results (a search
    # alone stores none), never the query (not stored): "searched for 'Lipstick'" would show a
    # product title as if it were the search
    "search": "found {t} through a search",
    "view": "viewed {t}",
}
_UNKNOWN_ACTION = "interacted with {t}"
_MAX_TITLE = 60


def action_phrase(action: str | None, name: str) -> str:
    """ "bought 'X'", "viewed 'X'", ...: what the shopper did with the item called `name`
    ("interacted with" when the action is unknown)."""
    return _ACTIONS.get(action or "", _UNKNOWN_ACTION).format(t=name)


def _history_text(parts: list[str]) -> str:
    return "because you " + (
        parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    )


def describe(explanation: Explanation, titles: Sequence[str] | None = None, *, n: int = 2) -> str:
    """The shopper-facing sentence of a model's Explanation.

    History kinds name the top contributors with what the shopper did ("because you bought
    'X' and viewed 'Y'"); other kinds keep the model's own text.

    Args:
        explanation: what `Recommender.explain` returned.
        titles: display title per item index (None: "item <index>").
        n: at most this many contributors named.
    """
    e = explanation

    def name(i: int) -> str:
        return f"'{titles[i]}'" if titles is not None and 0 <= i < len(titles) else f"item {i}"

    named = [action_phrase(e.actions.get(i), name(i)) for i, _ in e.contributors[:n]]
    if not named:
        return e.text
    if e.kind == "history":
        return _history_text(named)
    if e.kind == "cold_user":
        return "new here: " + _history_text(named)
    if e.kind == "cold_item":
        return "new in the shop, " + _history_text(named)
    return e.text


def history_contributions(
    model: Recommender, history: UserHistory, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(distinct history items, matrix [len(targets), len(items)] of their summed score shares)
    from `model.contributions`, or None where the model cannot attribute its score."""
    targets = np.asarray(targets, dtype=np.int64)
    share = model.contributions(history, targets)
    if share is None:
        return None
    items, inv = np.unique(np.asarray(history.items, dtype=np.int64), return_inverse=True)
    per_item = np.zeros((len(items), len(targets)), np.float64)
    np.add.at(per_item, inv.ravel(), np.asarray(share, np.float64).T)
    return items, per_item.T


@dataclass
class ItemExplanation:
    """Why one item is shown.

    Attributes:
        kind: rule, search, context, cold_item, history or popular.
        text: one short sentence.
        because: the history or catalogue items it rests on: {"item", "title", "action"}.
    """

    kind: str
    text: str
    because: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "text": self.text, "because": self.because}


def _short_titles(table: ItemTable) -> list[str]:
    """Display titles (at most _MAX_TITLE characters), computed once per table."""
    got = table.extras.get("short_titles")
    if got is None:
        got = [
            (t if len(t) <= _MAX_TITLE else t[: _MAX_TITLE - 1].rstrip() + "…")
            for t in (table.titles[i] or table.keys[i] for i in range(table.n_items))
        ]
        table.extras["short_titles"] = got
    return got  # type: ignore[return-value]


def _title(table: ItemTable, i: int) -> str:
    return _short_titles(table)[int(i)]


def _quoted(table: ItemTable, i: int) -> str:
    return f"'{_short_titles(table)[int(i)]}'"


RULE_TEXT = "placed by a shop rule"


def placed_by_rule() -> ItemExplanation:
    """The explanation of an item a shop rule placed (a pin): no personal evidence named."""
    return ItemExplanation("rule", RULE_TEXT, [])


def rule_placed(
    explanations: list[ItemExplanation], pinned: Sequence[bool] | np.ndarray | None
) -> list[ItemExplanation]:
    """`explanations` with each pinned item's replaced by "placed by a shop rule" (the one
    place every serving branch, the DP release's included, words a pin)."""
    if pinned is None:
        return explanations
    return [placed_by_rule() if bool(p) else e for e, p in zip(explanations, pinned, strict=True)]


def popular(table: ItemTable, i: int) -> ItemExplanation:
    """The explanation of an item ranked by a popularity release: its category only.

    For a list ranked by a DP release this is the only honest wording that reads no exact
    statistic (whether an item was ever touched is one: "new arrival" would tell).
    """
    cat = table.category_name(i)
    if cat:
        leaf = cat.split(">")[-1].strip()
        return ItemExplanation("popular", f"popular in {leaf}", [])
    return ItemExplanation("popular", "popular with shoppers", [])


def explain_items(
    model: Recommender | None,
    history: UserHistory,
    items: Sequence[int] | np.ndarray,
    table: ItemTable,
    *,
    personalized: bool = True,
    query: str | None = None,
    matched: Sequence[bool] | np.ndarray | None = None,
    filled: Sequence[bool] | np.ndarray | None = None,
    context_item: int | None = None,
    n_reasons: int = 2,
    pinned: Sequence[bool] | np.ndarray | None = None,
) -> list[ItemExplanation]:
    """One explanation per item in `items` (see the module docstring for the kinds).

    Args:
        model: the model that ranked the items (None: non-personalised ranking).
        history: the shopper's history in the model's index space (empty when anonymous).
        items: the recommended item indices.
        table: the compiled catalogue.
        personalized: False when the shopper's consent rules out personal data.
        query: the search query the items answer, if any.
        matched: per item, whether it matched `query`.
        filled: per item, whether it was chosen by popularity because the model had no signal.
        context_item: the item the shopper is looking at, if any.
        n_reasons: history items named per explanation.
        pinned: per item, whether a shop rule placed it (explained as such, never by history).
    """
    idx = np.asarray(items, dtype=np.int64)
    k = len(idx)
    filled_a = [False] * k if filled is None else np.asarray(filled, dtype=bool).tolist()
    matched_a = [False] * k if matched is None else np.asarray(matched, dtype=bool).tolist()
    pinned_a = [False] * k if pinned is None else np.asarray(pinned, dtype=bool).tolist()
    pop_l = table.popularity[idx].tolist()
    out: list[ItemExplanation] = []
    use_history = personalized and model is not None and len(history) > 0
    actions = strongest_actions(history) if use_history else {}
    # distinct in-catalogue history items: the candidates a new arrival is compared with
    seen_items = (
        [j for j in np.unique(history.items).tolist() if 0 <= j < table.n_items]
        if use_history
        else []
    )
    contrib = (
        history_contributions(model, history, idx) if use_history and model is not None else None
    )
    titles = _short_titles(table)
    keys = table.keys

    def quoted(j: int) -> str:
        return f"'{titles[j]}'"

    q = (query or "").strip()
    if len(q) > 60:
        q = q[:59].rstrip() + "…"
    hist_l: list[int] = []
    mat_l: list[list[float]] = []
    if contrib is not None:
        hist_l = contrib[0].tolist()
        mat_l = contrib[1].tolist()
    for r, i in enumerate(idx.tolist()):
        if pinned_a[r]:
            # the rule, not the shopper's history, put it here: naming history would be false
            out.append(placed_by_rule())
            continue
        reasons: list[tuple[int, float]] = []
        if use_history and model is not None:
            if contrib is not None:
                # positive shares, largest first (ties: lower item index first)
                pos = sorted(((-c, h) for h, c in zip(hist_l, mat_l[r], strict=True) if c > 0))[
                    :n_reasons
                ]
                reasons = [(h, -c) for c, h in pos]
            elif not filled_a[r]:
                exp = model.explain(history, int(i))
                reasons = [(int(j), float(c)) for j, c in exp.contributors if c > 0][:n_reasons]
        because = [
            {"item": keys[j], "title": titles[j], "action": actions.get(j, "view")}
            for j, _ in reasons
        ]
        if q and matched_a[r]:
            text = f"matches your search '{q}'"
            if reasons:
                text += "; " + _history_text(
                    [action_phrase(actions.get(j, "view"), quoted(j)) for j, _ in reasons[:1]]
                )
            out.append(ItemExplanation("search", text, because[:1]))
            continue
        if context_item is not None and reasons and reasons[0][0] == int(context_item):
            out.append(
                ItemExplanation(
                    "context",
                    f"because you are looking at {_quoted(table, context_item)}",
                    because[:1],
                )
            )
            continue
        if pop_l[r] <= 0:
            sim = (
                _similar_in_history(table, i, [j for j, _ in reasons] + seen_items)
                if use_history
                else None
            )
            if sim is not None:
                out.append(
                    ItemExplanation(
                        "cold_item",
                        f"new arrival similar to {_quoted(table, sim)}",
                        [
                            {
                                "item": table.keys[sim],
                                "title": _title(table, sim),
                                "action": actions.get(sim, "view"),
                            }
                        ],
                    )
                )
                continue
            cat = table.category_name(i)
            leaf = cat.split(">")[-1].strip() if cat else None
            out.append(
                ItemExplanation(
                    "cold_item", f"new arrival in {leaf}" if leaf else "new arrival", []
                )
            )
            continue
        if reasons and not filled_a[r]:
            parts = [action_phrase(actions.get(j, "view"), quoted(j)) for j, _ in reasons]
            out.append(ItemExplanation("history", _history_text(parts), because))
            continue
        out.append(popular(table, i))
    return out


def _similar_in_history(table: ItemTable, item: int, candidates: list[int]) -> int | None:
    """The history item most like `item` by public data: same category and brand, then same
    category."""
    c, b = int(table.category[item]), int(table.brand[item])
    best, best_score = None, 0
    for j in candidates:
        score = 0
        if c >= 0 and int(table.category[j]) == c:
            score += 2
        elif int(table.top_category[item]) >= 0 and int(table.top_category[j]) == int(
            table.top_category[item]
        ):
            score += 1
        if (
            score and b >= 0 and int(table.brand[j]) == b
        ):  # the brand counts only within the same department
            score += 1
        if score > best_score:
            best, best_score = j, score
    return best
