"""What the pages show beyond a ranked list (layer 7): score contributions for one shopper and
item, items bought together, and the store's events per day for the operator console.

The three share the serving state (`Serving`), so the pages, the API and the CLI see the same
numbers. Bought-together lists only pairs that at least `MIN_SHOPPERS` distinct shoppers bought
(and never print a count): a pair bought by one shopper would tell any visitor what that one
shopper bought.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.types import strongest_actions
from privrec.explain.explanations import history_contributions
from privrec.service.serving import Serving

__all__ = ["MIN_SHOPPERS", "Insights"]

# Fewest distinct shoppers behind a bought-together pair before it is shown to anyone.
MIN_SHOPPERS = 3
# Store-wide aggregates are recomputed when the event count changed, at most this often.
_REFRESH_SECONDS = 30.0


class Insights:
    """Contributions, bought-together and daily event counts over one `Serving`."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self._lock = threading.Lock()
        self._key: tuple[int, float] | None = None
        self._daily_key: tuple[int, int] | None = None
        self._daily: pd.DataFrame | None = None
        self._pairs: dict[str, Counter[str]] = {}

    # ---- one shopper, one item ------------------------------------------------------------------
    def contributions(
        self, user_id: str, item: str, *, model: str | None = None, n: int = 10
    ) -> dict[str, Any]:
        """Which of the shopper's items made `item` score as it does, and by how much.

        Returns:
            {"item", "model", "version", "personalized", "score", "contributors": [{"item",
            "title", "action", "contribution", "share"}]}: `share` is the item's part of the sum
            of all positive contributions (0..1), largest first, at most `n`.
        """
        if n < 1:
            raise ValidationError("n", "must be at least 1")
        s = self.serving
        loaded = s.model(model)
        i = loaded.index.get(item, -1)
        if i < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue of model {loaded.name!r}")
        p = s.ctx.pseudonymise(user_id)
        level = s.consent.level(p)
        history = s.history_for(loaded, p, level)
        out: dict[str, Any] = {
            "item": item,
            "model": loaded.name,
            "version": loaded.version,
            "personalized": len(history) > 0,
            "consent": level.value,
            "score": None,
            "contributors": [],
        }
        if not len(history):
            return out
        out["score"] = round(float(s.scores(loaded, history)[i]), 6)
        got = history_contributions(loaded.model, history, np.asarray([i], np.int64))
        if got is not None:
            pairs = list(zip(got[0].tolist(), got[1][0].tolist(), strict=True))
        else:  # the model attributes only through its own explain
            pairs = [(int(j), float(c)) for j, c in loaded.model.explain(history, i).contributors]
        positive = sorted(((j, c) for j, c in pairs if c > 0), key=lambda t: (-t[1], t[0]))
        total = sum(c for _, c in positive)
        actions = strongest_actions(history)
        t = loaded.table
        out["contributors"] = [
            {
                "item": t.keys[j],
                "title": t.titles[j] or t.keys[j],
                "action": actions.get(j, "view"),
                "contribution": round(c, 6),
                "share": round(c / total, 4) if total > 0 else 0.0,
            }
            for j, c in positive[:n]
        ]
        return out

    # ---- store-wide aggregates ------------------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute the bought-together pairs when the store changed, at most every 30 s."""
        store = self.serving.ctx.store
        with self._lock:
            count = store.count()
            now = time.monotonic()
            # reading every event costs: at most once per _REFRESH_SECONDS, and only on change
            if self._key is not None and (
                self._key[0] == count or now - self._key[1] < _REFRESH_SECONDS
            ):
                return
            ev = store.events()
            bought = ev.loc[ev["type"] == "purchase", ["user", "item"]].drop_duplicates()
            pairs: dict[str, Counter[str]] = {}
            for items in bought.groupby("user")["item"].agg(list):
                if len(items) < 2 or len(items) > 500:  # a bulk buyer says nothing about pairs
                    continue
                for a in items:
                    c = pairs.setdefault(a, Counter())
                    c.update(b for b in items if b != a)
            self._pairs, self._key = pairs, (count, now)

    def _daily_counts(self, days: int) -> pd.DataFrame:
        """Events per day (rows) and type (columns) from the store's own aggregate, cached
        until the event count changes (no event row is read here)."""
        store = self.serving.ctx.store
        with self._lock:
            key = (store.count(), days)
            if self._daily is None or self._daily_key != key:
                rows = store.daily_counts(days)
                self._daily = (
                    rows.pivot_table(index="date", columns="type", values="count", fill_value=0)
                    .astype("int64")
                    .sort_index()
                    if len(rows)
                    else pd.DataFrame()
                )
                self._daily_key = key
            return self._daily

    def events_per_day(self, days: int = 30) -> dict[str, Any]:
        """Stored events per UTC day and type over the last `days` days with events.

        Returns:
            {"days": ["YYYY-MM-DD", ...], "series": {type: [count per day]}, "total": int}
        """
        if not 1 <= days <= 3660:
            raise ValidationError("days", "must be between 1 and 3660")
        daily = self._daily_counts(days)
        if daily.empty:
            return {"days": [], "series": {}, "total": 0}
        # a continuous run of days (days without events count 0) ending at the last event,
        # from the first event's day when that is more recent (at least a week is shown)
        first, last = pd.Timestamp(daily.index[0]), pd.Timestamp(daily.index[-1])
        span = min(days, max((last - first).days + 1, min(7, days)))
        full = pd.date_range(end=last, periods=span, freq="D")
        labels = [d.strftime("%Y-%m-%d") for d in full]
        frame = daily.reindex(labels, fill_value=0)
        return {
            "days": labels,
            "series": {str(c): [int(v) for v in frame[c].tolist()] for c in frame.columns},
            "total": int(frame.to_numpy().sum()),
        }

    def bought_together(self, item: str, k: int = 6) -> dict[str, Any]:
        """Catalogue items that shoppers who bought `item` also bought, most shoppers first.

        Only pairs with at least `MIN_SHOPPERS` distinct buyers count, deleted and unknown items
        are left out, and no count is returned.
        """
        if not 1 <= k <= 100:
            raise ValidationError("k", "must be between 1 and 100")
        loaded = self.serving.model()
        if loaded.index.get(item, -1) < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue")
        self._refresh()
        counts = self._pairs.get(item, Counter())
        hidden = loaded.hidden
        picked: list[dict[str, Any]] = []
        for other, c in sorted(counts.items(), key=lambda t: (-t[1], t[0])):
            if c < MIN_SHOPPERS:
                break
            j = loaded.index.get(other, -1)
            if j < 0 or (hidden is not None and bool(hidden[j])):
                continue
            picked.append(loaded.item_dict(j))
            if len(picked) == k:
                break
        return {"item": item, "min_shoppers": MIN_SHOPPERS, "items": picked}
