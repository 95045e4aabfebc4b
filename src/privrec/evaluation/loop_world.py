"""A changing demo shop for closed-loop simulation: shoppers who answer the lists they are shown.

The world is the demo shop's generative model (`privrec.data.synthetic.generate_shop_truth`)
run forward in time after its 90 days of history, with two changes every shop sees:

- New items: a share of the catalogue is launched during the simulation (a launch day per
  item, uniform over days 1..D). Before its launch an item does not exist: the day-0 history
  loses the demo's events on it, and nobody can view or buy it.
- New shoppers: shoppers beyond the history's arrive (a join day each, uniform over 1..D).
  They have the same kind of hidden tastes as the others and no history.

Each day a sample of the shoppers who have joined visits once. A visit has two parts:

- Organic browsing, exactly `generate_shop`'s session model over the items that exist: a focus
  category from the shopper's category preferences, Geometric(0.25) views (at most 30), 85% in
  the focus category, each item by softmax(affinity) inside its category; a viewed item in
  stock is carted with the generator's probability and half of the carts are bought.
- The recommended list: the shopper examines position p (0-based) with probability
  1 / log2(p + 2) (position bias) and clicks an examined item i with probability
  min(1, `interest_views` * P_u(i)), P_u(i) being the chance that one of their organic views
  lands on i (so an item they would have browsed anyway is clicked); a clicked item is carted
  and bought with the generator's funnel probabilities.

All random draws of a visit come from a generator seeded by (seed, day, visit), and the list's
draws are made per position before the list is known, so every arm of a comparison sees the
same shoppers, the same organic sessions and the same random numbers (common random numbers):
two arms differ only through the lists they serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from privrec.data.synthetic import END_TS, generate_shop_truth

__all__ = ["DAY_S", "ShopWorld", "Visit", "WorldConfig"]

DAY_S = 86_400
_MAX_VIEWS = 30


@dataclass(frozen=True)
class WorldConfig:
    """The simulated shop.

    Attributes:
        n_items: catalogue size (launched and yet to launch).
        n_history_users: shoppers with the demo's 90 days of history.
        n_new_users: shoppers who join during the simulation.
        days: simulated days after the history.
        visits_per_day: shopper visits per day (at most the shoppers who have joined).
        new_item_share: share of the catalogue launched during the simulation.
        interest_views: a visit's number of organic views the click model scales P_u(i) by.
        k: the list length served to each visit.
        seed: the world's seed (tastes, launches, arrivals, visits).
    """

    n_items: int = 3000
    n_history_users: int = 3000
    n_new_users: int = 600
    days: int = 14
    visits_per_day: int = 300
    new_item_share: float = 0.2
    interest_views: float = 4.0
    k: int = 10
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("n_history_users", "days", "visits_per_day", "k"):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.new_item_share < 1.0:
            raise ValueError(
                f"WorldConfig.new_item_share: must be in [0, 1), got {self.new_item_share}"
            )


@dataclass
class Visit:
    """One shopper's visit on one day, with its organic events and the list's draws."""

    day: int
    index: int
    user: int
    ts: float
    organic: list[dict[str, object]] = field(default_factory=list)
    u_click: np.ndarray = field(default_factory=lambda: np.zeros(0))
    u_cart: np.ndarray = field(default_factory=lambda: np.zeros(0))
    u_buy: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def user_id(self) -> str:
        """The shop's raw id of the shopper (the gate pseudonymises it)."""
        return user_id(self.user)


def user_id(u: int) -> str:
    """The raw id `generate_shop` gives shopper row u."""
    return f"shopper-{u:05d}"


class ShopWorld:
    """The demo shop moving forward in time (see the module docstring).

    Args:
        config: the world's settings.
    """

    def __init__(self, config: WorldConfig) -> None:
        self.config = c = config
        n_users = c.n_history_users + c.n_new_users
        events, catalogue, truth = generate_shop_truth(c.n_items, n_users, c.seed)
        self.truth = truth
        self.catalogue = catalogue.reset_index(drop=True)
        rng = np.random.default_rng([c.seed, 1])
        self.launch_day = np.zeros(c.n_items, dtype=np.int64)
        n_new = round(c.new_item_share * c.n_items)
        new = rng.choice(c.n_items, size=n_new, replace=False)
        self.launch_day[new] = rng.integers(1, c.days + 1, size=n_new)
        self.join_day = np.zeros(n_users, dtype=np.int64)
        self.join_day[c.n_history_users :] = rng.integers(1, c.days + 1, size=c.n_new_users)
        index = {k: i for i, k in enumerate(truth.items.tolist())}
        self.item_index = index
        # the day-0 history: the history shoppers' demo events on items that exist on day 0
        user_row = events["user"].str.slice(len("shopper-")).astype(np.int64).to_numpy()
        item_row = events["item"].map(index).to_numpy()
        keep = (user_row < c.n_history_users) & (self.launch_day[item_row] == 0)
        self.history = events.loc[keep].reset_index(drop=True)
        self._cart = truth.cart_given_view(np.arange(n_users))  # (users, items), fixed
        self.positions = 1.0 / np.log2(np.arange(c.k) + 2.0)
        self._probs: dict[tuple[int, int], np.ndarray] = {}

    # ---- time ---------------------------------------------------------------------------------
    @staticmethod
    def day_start(day: int) -> float:
        """Unix seconds when simulated day `day` (1-based) begins: day 1 starts at END_TS."""
        return float(END_TS + (day - 1) * DAY_S)

    def available(self, day: int) -> np.ndarray:
        """Which items exist on `day` (0: the history's catalogue)."""
        return np.asarray(self.launch_day <= day)

    def launches(self, day: int) -> pd.DataFrame:
        """The catalogue rows of the items launched on `day` (day 0: the initial catalogue)."""
        return self.catalogue.loc[self.launch_day == day].reset_index(drop=True)

    # ---- visits -------------------------------------------------------------------------------
    def visits(self, day: int) -> list[Visit]:
        """The day's visits, in time order, with their organic events and the list's draws.

        Call it before `respond` for the day's visits (it computes the shoppers' P_u).
        """
        c = self.config
        joined = np.nonzero(self.join_day <= day)[0]
        pick = np.random.default_rng([c.seed, 2, day])
        n = min(c.visits_per_day, len(joined))
        users = np.sort(pick.choice(joined, size=n, replace=False))
        pick.shuffle(users)
        probs = self.truth.view_probabilities(users, self.available(day))
        start = self.day_start(day)
        out = []
        for j, u in enumerate(users.tolist()):
            rng = np.random.default_rng([c.seed, 3, day, j])
            ts = start + 60.0 + j * (DAY_S - 7_200) / max(n, 1)
            visit = Visit(day, j, u, ts)
            visit.organic = self._browse(rng, u, probs[j], ts)
            visit.u_click, visit.u_cart, visit.u_buy = rng.random((3, c.k))
            out.append(visit)
        # kept for `respond`: the day's P_u over the items that exist that day
        self._probs = {(day, u): row for u, row in zip(users.tolist(), probs, strict=True)}
        return out

    def _browse(
        self, rng: np.random.Generator, u: int, p: np.ndarray, ts: float
    ) -> list[dict[str, object]]:
        """An organic session, `generate_shop`'s session model over the items that exist."""
        truth = self.truth
        n_views = min(_MAX_VIEWS, int(rng.geometric(0.25)))
        pref = self.truth.cat_pref[u]
        live = np.bincount(truth.cat_of, weights=p, minlength=len(pref)) > 0
        cat_p = np.where(live, pref, 0.0)
        cat_p /= cat_p.sum()
        focus = int(rng.choice(len(pref), p=cat_p))
        events: list[dict[str, object]] = []
        t = ts + 120.0  # after the list was shown
        for _ in range(n_views):
            cat = focus if rng.random() < 0.85 else int(rng.choice(len(pref), p=cat_p))
            w = np.where(truth.cat_of == cat, p, 0.0)
            item = int(rng.choice(len(w), p=w / w.sum()))
            t += 5.0 + rng.exponential(40.0)
            key = str(truth.items[item])
            events.append(_event(u, key, "view", t))
            if rng.random() < self._cart[u, item]:
                events.append(_event(u, key, "cart", t + 3.0))
                if rng.random() < 0.5:
                    events.append(_event(u, key, "purchase", t + 60.0))
        return events

    def respond(self, visit: Visit, items: list[str]) -> tuple[list[dict[str, object]], float]:
        """The shopper's answer to a served list: (outcome events, expected purchases).

        The events are raw records for the gate (view = click, cart, purchase) without the
        list id (the caller adds it); the expected purchases are the truth's probability sum
        for this list, P(examine) * P(click) * P(cart) * P(buy) over its positions.
        """
        p = self._probs[(visit.day, visit.user)]
        exists = self.available(visit.day)
        events: list[dict[str, object]] = []
        expected = 0.0
        for pos, key in enumerate(items[: self.config.k]):
            i = self.item_index.get(key)
            if i is None or not exists[i]:
                continue  # an item the world does not know cannot be wanted
            click = self.positions[pos] * min(1.0, self.config.interest_views * float(p[i]))
            cart = float(self._cart[visit.user, i])
            expected += click * cart * 0.5
            if visit.u_click[pos] >= click:
                continue
            t = visit.ts + 10.0 + 20.0 * pos
            events.append(_event(visit.user, key, "view", t))
            if visit.u_cart[pos] < cart:
                events.append(_event(visit.user, key, "cart", t + 3.0))
                if visit.u_buy[pos] < 0.5:
                    events.append(_event(visit.user, key, "purchase", t + 30.0))
        return events, expected


def _event(u: int, item: str, kind: str, ts: float) -> dict[str, object]:
    return {"user": user_id(u), "item": item, "type": kind, "timestamp": int(ts)}
