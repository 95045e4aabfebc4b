"""What the pages show beyond a ranked list (layer 7): score contributions for one shopper and
item, items bought together, and the store's events per day for the operator console.

The three share the serving state (`Serving`), so the pages, the API and the CLI see the same
numbers.

Bought-together is shown to every visitor, so it is a differentially private release (user-level,
`privacy.partition`): each shopper counts at most `bought_together_max_pairs` pairs of items they
bought, the pair counts get Gaussian noise and only pairs above a calibrated threshold are kept
(a pair bought by one shopper stays hidden except with a probability of about 1e-9). A plain
"at least 3 buyers" rule would not do: an attacker who watches the list before and after one
shopper's purchase sees the pair that shopper completed. The release is charged to the privacy
ledger before its noise is drawn, kept (sealed) beside the store and renewed at most every
`bought_together_refresh_days` when events changed; a refused charge keeps the previous release.
Being DP, a release needs no change when a shopper is erased.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import BudgetExceededError, NotFoundError, ValidationError
from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import strongest_actions
from privrec.explain.explanations import history_contributions
from privrec.privacy.partition import SparseHistogram, bound_contributions
from privrec.privacy.sealed import read_sealed, write_sealed
from privrec.service.serving import Serving

__all__ = ["BOUGHT_TOGETHER_FILE", "Insights"]

logger = logging.getLogger(__name__)

BOUGHT_TOGETHER_FILE = "bought-together.sealed"
RELEASE_NAME = "bought_together:pairs"
# The threshold's share of delta per release: the ledger subtracts it from the budget's delta by
# the basic rule, so it is kept far below it (each release uses a thousandth).
_THRESHOLD_DELTA_SHARE = 1e-3
# A shopper who bought more items than this is a bulk buyer: their pairs say nothing.
_MAX_BASKET = 500


class Insights:
    """Contributions, bought-together and daily event counts over one `Serving`."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self._lock = threading.Lock()
        self._daily_key: tuple[int, int] | None = None
        self._daily: pd.DataFrame | None = None
        self._release: dict[str, Any] | None = None

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
    def _release_path(self) -> Any:
        return self.serving.ctx.data_dir / BOUGHT_TOGETHER_FILE

    def _load_release(self) -> None:
        path = self._release_path()
        if self._release is not None or not path.exists():
            return
        try:
            self._release = json.loads(read_sealed(path, self.serving.ctx.sidecar_key))
        except Exception as exc:  # unreadable: a new release replaces it at the next refresh
            logger.warning("bought-together release unreadable error=%s", type(exc).__name__)

    def _refresh(self) -> None:
        """A new DP release when none exists, or events changed and the last one is old enough."""
        ctx = self.serving.ctx
        st = ctx.settings
        with self._lock:
            if st.bought_together_epsilon <= 0:  # turned off: nothing is shown
                self._release = None
                return
            self._load_release()
            old = self._release
            # the age first: an item page within the refresh period costs no store query
            if old is not None and (
                time.time() - float(old["time"]) < st.bought_together_refresh_days * 86400.0
            ):
                return
            count = ctx.store.count()
            if old is not None and old.get("events") == count:
                return
            delta = st.privacy_budget_delta
            hist = SparseHistogram.calibrated(
                st.bought_together_epsilon,
                delta / 2.0,
                delta * _THRESHOLD_DELTA_SHARE,
                st.bought_together_max_pairs,
            )
            ev = ctx.store.events()
            bought = ev.loc[ev["type"] == "purchase", ["user", "item"]].drop_duplicates()
            baskets = [
                sorted(items)
                for items in bought.groupby("user")["item"].agg(list)
                if 2 <= len(items) <= _MAX_BASKET
            ]
            pairs_per_user = (
                [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]] for items in baskets
            )
            counts = bound_contributions(
                pairs_per_user, hist.max_keys, np.random.default_rng(DEFAULT_SEED)
            )
            try:  # charged before any noise is drawn; a refusal keeps the previous release
                ctx.ledger.charge(hist.describe(RELEASE_NAME), model="bought_together")
            except BudgetExceededError as exc:
                logger.warning("bought-together not renewed: %s", exc)
                return
            released = hist.release(counts)  # fresh OS entropy, never seeded
            partners: dict[str, list[tuple[str, float]]] = {}
            for (a, b), noisy in released.items():
                partners.setdefault(str(a), []).append((str(b), noisy))
                partners.setdefault(str(b), []).append((str(a), noisy))
            rel = {
                "time": time.time(),
                "events": count,
                "epsilon": hist.epsilon,
                "delta": hist.delta,
                "max_pairs_per_shopper": hist.max_keys,
                # only the order is kept: the noisy counts are not needed to rank
                "partners": {
                    a: [b for b, _ in sorted(lst, key=lambda t: (-t[1], t[0]))]
                    for a, lst in partners.items()
                },
            }
            write_sealed(self._release_path(), json.dumps(rel).encode(), ctx.sidecar_key)
            self._release = rel

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
        """Catalogue items that shoppers who bought `item` also bought, from the DP release.

        Deleted and unknown items are left out and no count is returned.

        Returns:
            {"item", "items": [item dicts], "privacy": {"epsilon", "delta", "released_at",
            "max_pairs_per_shopper"} or None while no release exists (disabled, or the budget
            refused the first one)}.
        """
        if not 1 <= k <= 100:
            raise ValidationError("k", "must be between 1 and 100")
        loaded = self.serving.model()
        if loaded.index.get(item, -1) < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue")
        self._refresh()
        rel = self._release
        hidden = loaded.hidden
        picked: list[dict[str, Any]] = []
        for other in (rel or {}).get("partners", {}).get(item, []):
            j = loaded.index.get(other, -1)
            if j < 0 or (hidden is not None and bool(hidden[j])):
                continue
            picked.append(loaded.item_dict(j))
            if len(picked) == k:
                break
        privacy = None
        if rel is not None:
            privacy = {
                "epsilon": rel["epsilon"],
                "delta": rel["delta"],
                "max_pairs_per_shopper": rel["max_pairs_per_shopper"],
                "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rel["time"])),
            }
        return {"item": item, "items": picked, "privacy": privacy}
