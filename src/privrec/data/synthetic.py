"""A synthetic demo shop: a readable product catalogue and shoppers with latent tastes.

`generate_shop` returns raw events (as they would arrive at the door, raw user ids included) and
the catalogue. The behaviour model, in short:

- Catalogue (`privrec.data.synthetic_catalogue`): 21 leaf categories in 8 departments, brands
  tied to departments plus a house brand, readable titles, log-normal prices, ~6% out of stock, a
  Zipf popularity per item and a hidden 6-dimensional style vector per item.
- Shoppers: 2-4 favourite categories (Dirichlet weights), 1-3 favourite brands, a preferred
  price level with a sensitivity, a hidden style vector, and an activity level (log-normal).
  Affinity(user, item) = popularity + favourite-brand bonus + style match - price mismatch.
- Sessions over 90 days ending at `END_TS` (fixed, so output never depends on today): each has
  a focus category drawn from the shopper's tastes; ~30% start with a search whose query text
  comes from the clicked product; views are drawn by affinity (85% in the focus category); a
  viewed in-stock item is carted or favourited with a probability rising with affinity; half of
  the carted items are bought at the end of the session. So views >> carts > favorites >
  purchases, and later purchases follow earlier browsing: collaborative filtering can learn it.

Same arguments, same output (numpy Generators seeded from `seed`); the catalogue depends only on
(n_items, seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from privrec.data.dataset import InteractionDataset
from privrec.data.loaders import dataset_from_raw_events
from privrec.data.synthetic_catalogue import STYLE_DIM, brand_names, generate_catalogue
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = [
    "END_TS",
    "SPAN_DAYS",
    "ShopTruth",
    "generate_shop",
    "generate_shop_dataset",
    "generate_shop_truth",
]

END_TS = 1_719_792_000  # 2024-07-01T00:00:00Z
SPAN_DAYS = 90

_TYPE_NAMES = ("search", "view", "cart", "favorite", "purchase")
_CODE = {t: k for k, t in enumerate(_TYPE_NAMES)}


def _query(rng: np.random.Generator, brand: str, adj: str, noun: str, variant: str) -> str:
    """Search text a shopper would type to find this product."""
    r = rng.random()
    if r < 0.35:
        q = noun
    elif r < 0.6 and adj:
        q = f"{adj} {noun}"
    elif r < 0.8:
        q = f"{brand} {noun}"
    else:
        q = f"{noun} {variant}"
    return q.lower()


# The funnel of `generate_shop`: P(cart | view) = min(CART_CAP, CART_RATE * boost) for an item in
# stock, P(purchase | cart) = BUY_RATE, boost = exp(0.6 * clip(affinity - category mean, -2, 2)).
CART_RATE, CART_CAP, BUY_RATE = 0.07, 0.6, 0.5


@dataclass(frozen=True)
class ShopTruth:
    """The hidden tastes `generate_shop` drew its shoppers' events from (the generative truth).

    Row u is the shopper "shopper-{u:05d}", column i the catalogue's item i.

    Attributes:
        items: the catalogue's item keys.
        cat_of: each item's leaf category (ints; the catalogue is sorted by it).
        in_stock: whether each item can be carted.
        affinity: (n_users, n_items) affinity(user, item) as in the module docstring.
        cat_pref: (n_users, n_cats) each shopper's category distribution (a view's category).
    """

    items: np.ndarray
    cat_of: np.ndarray
    in_stock: np.ndarray
    affinity: np.ndarray
    cat_pref: np.ndarray

    def view_probabilities(
        self, users: np.ndarray, available: np.ndarray | None = None
    ) -> np.ndarray:
        """P(one view of shopper u lands on item i): category by `cat_pref`, then the item by
        softmax(affinity) inside the category, as `generate_shop` draws views.

        Args:
            users: shopper rows.
            available: boolean mask of items that exist (None: all); the others get 0 and a
                category with none left loses its share (the rest renormalised).
        """
        aff = self.affinity[np.asarray(users)]
        mask = np.ones(aff.shape[1], bool) if available is None else np.asarray(available, bool)
        w = np.where(mask, np.exp(aff - aff.max(axis=1, keepdims=True)), 0.0)
        n_cats = self.cat_pref.shape[1]
        per_cat = np.zeros((len(w), n_cats))
        np.add.at(per_cat.T, self.cat_of, w.T)  # sum of weights per (user, category)
        pref = np.where(per_cat > 0, self.cat_pref[np.asarray(users)], 0.0)
        pref /= pref.sum(axis=1, keepdims=True)
        share = np.divide(pref, per_cat, out=np.zeros_like(pref), where=per_cat > 0)
        out: np.ndarray = w * share[:, self.cat_of]
        return out

    def cart_given_view(self, users: np.ndarray) -> np.ndarray:
        """P(cart | the shopper views item i), `generate_shop`'s funnel (0 when out of stock)."""
        aff = self.affinity[np.asarray(users)]
        n_cats = self.cat_pref.shape[1]
        sums = np.zeros((len(aff), n_cats))
        np.add.at(sums.T, self.cat_of, aff.T)
        counts = np.bincount(self.cat_of, minlength=n_cats).astype(np.float64)
        mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        boost = np.exp(0.6 * np.clip(aff - mean[:, self.cat_of], -2.0, 2.0))
        out: np.ndarray = np.where(self.in_stock, np.minimum(CART_CAP, CART_RATE * boost), 0.0)
        return out

    def purchase_given_view(self, users: np.ndarray) -> np.ndarray:
        """P(purchase | the shopper views item i): carted, then bought at the session's end."""
        return self.cart_given_view(users) * BUY_RATE


def generate_shop_truth(
    n_items: int = 3000, n_users: int = 3000, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame, ShopTruth]:
    """`generate_shop`'s output (the same events and catalogue) and the truth it was drawn from.

    The shoppers of `generate_shop(n_items, n, seed)` for n < n_users are the first n rows here
    (each shopper's draws follow the earlier shoppers'), so a larger `n_users` adds shoppers
    without changing the first ones.
    """
    events, catalogue, truth = _generate(n_items, n_users, seed, keep_tastes=True)
    assert truth is not None  # keep_tastes=True always builds it
    return events, catalogue, truth


def generate_shop(
    n_items: int = 3000, n_users: int = 3000, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate a demo shop's raw event log and catalogue.

    Args:
        n_items: products in the catalogue.
        n_users: shoppers (raw ids "shopper-00042"; the gate pseudonymises them).
        seed: the seed; the same arguments give the same output.

    Returns:
        (events, catalogue). events: raw columns user, item, type, timestamp (int Unix seconds,
        within the SPAN_DAYS days before END_TS), query (search text or None), session (opaque
        id, unrelated to the user id), event_id; sorted by timestamp. catalogue: one row per
        item with ITEM_META_COLUMNS (item, title, category, brand, price, in_stock, text).
    """
    events, catalogue, _ = _generate(n_items, n_users, seed, keep_tastes=False)
    return events, catalogue


def _generate(
    n_items: int, n_users: int, seed: int, *, keep_tastes: bool
) -> tuple[pd.DataFrame, pd.DataFrame, ShopTruth | None]:
    """`generate_shop`'s body; with `keep_tastes`, also the shoppers' hidden tastes (the same
    random draws either way, so the events do not depend on it)."""
    if n_items < 50 or n_users < 1:
        raise ValueError("generate_shop needs n_items >= 50 and n_users >= 1")
    affinities: list[np.ndarray] = []
    cat_prefs: list[np.ndarray] = []
    cat_seq, user_seq = np.random.SeedSequence(seed).spawn(2)
    catalogue, h = generate_catalogue(n_items, np.random.default_rng(cat_seq))
    rng = np.random.default_rng(user_seq)

    cat_of, brand_of = h["cat"], h["brand"]
    n_cats, n_brands = int(h["n_cats"]), int(h["n_brands"])
    starts = np.searchsorted(
        cat_of, np.arange(n_cats + 1)
    )  # items of category c: [starts[c], starts[c+1])
    nonempty = np.diff(starts) > 0
    cat_size = np.diff(starts).astype(np.float64)
    brands = brand_names()
    begin = END_TS - SPAN_DAYS * 86_400

    in_stock = h["in_stock"]
    cat_total = np.where(nonempty, cat_size, 0.0) / cat_size.sum()
    parts: list[
        tuple[np.ndarray, ...]
    ] = []  # per user: (user, item, type code, ts, session, query)
    session_no = 0
    for u in range(n_users):
        # Tastes: favourite categories (big ones more often), brands, price level, style.
        n_fav = int(rng.integers(2, 5))
        fav = rng.choice(n_cats, size=min(n_fav, int(nonempty.sum())), replace=False, p=cat_total)
        cat_pref = 0.1 * cat_total
        cat_pref[fav] += rng.dirichlet(np.ones(len(fav))) * 0.9
        cat_pref /= cat_pref.sum()
        fav_depts = set(h["cat_dept"][fav])
        brand_pool = [
            b
            for b in range(n_brands)
            if h["brand_dept"][b] in fav_depts or h["brand_dept"][b] == "*"
        ]
        fav_brands = rng.choice(
            brand_pool, size=min(len(brand_pool), int(rng.integers(1, 4))), replace=False
        )
        brand_bonus = np.zeros(n_brands)
        brand_bonus[fav_brands] = 1.2
        price_level = rng.normal(0.0, 0.4)
        price_sens = rng.uniform(0.5, 2.5)
        style = rng.normal(0.0, 1.0, size=STYLE_DIM)
        affinity = (
            h["log_pop"]
            + brand_bonus[brand_of]
            + 0.6 * (h["style"] @ style) / np.sqrt(STYLE_DIM)
            - price_sens * (h["log_rel_price"] - price_level) ** 2
        )
        if keep_tastes:
            affinities.append(affinity)
            cat_prefs.append(cat_pref)
        cum = np.cumsum(np.exp(affinity - affinity.max()))  # sampling inside a category's slice
        cat_mean = np.zeros(n_cats)
        cat_mean[nonempty] = np.add.reduceat(affinity, starts[:-1][nonempty]) / cat_size[nonempty]

        # Sessions: start times, focus category, number of views.
        n_sess = 1 + min(40, int(rng.poisson(np.exp(rng.normal(1.2, 0.7)))))
        t0 = np.sort(rng.uniform(begin, END_TS - 7_200, size=n_sess))
        focus = rng.choice(n_cats, size=n_sess, p=cat_pref)
        n_views = np.minimum(30, rng.geometric(0.25, size=n_sess))
        n_v = int(n_views.sum())
        sess = np.repeat(np.arange(n_sess), n_views)
        first = np.concatenate([[0], np.cumsum(n_views)[:-1]])
        last = first + n_views - 1

        # Views: 85% in the focus category, drawn by affinity inside the category.
        vc = focus[sess]
        wander = rng.random(n_v) >= 0.85
        vc[wander] = rng.choice(n_cats, size=int(wander.sum()), p=cat_pref)
        lo = np.where(starts[vc] > 0, cum[np.maximum(starts[vc] - 1, 0)], 0.0)
        hi = cum[starts[vc + 1] - 1]
        items = np.minimum(
            np.searchsorted(cum, lo + rng.random(n_v) * (hi - lo), side="right"), starts[vc + 1] - 1
        )

        # Times: an optional search opens the session, then views 5 s + Exp(40 s) apart.
        has_search = rng.random(n_sess) < 0.3
        offset = np.where(has_search, 2.0 + rng.exponential(8.0, size=n_sess), 0.0)
        gaps = 5.0 + rng.exponential(40.0, size=n_v)
        before = np.cumsum(gaps) - gaps
        view_t = t0[sess] + offset[sess] + before - before[first][sess]
        end_t = view_t[last] + gaps[last] + 30.0 + rng.exponential(120.0, size=n_sess)

        # Funnel: cart / favorite more likely for items the shopper likes; half of carts bought.
        boost = np.exp(0.6 * np.clip(affinity[items] - cat_mean[cat_of[items]], -2.0, 2.0))
        cart = in_stock[items] & (rng.random(n_v) < np.minimum(0.6, 0.07 * boost))
        cart_idx = np.nonzero(cart)[0]
        _, keep = np.unique(sess[cart_idx] * n_items + items[cart_idx], return_index=True)
        cart = np.zeros(n_v, dtype=bool)
        cart[cart_idx[keep]] = True  # once per item and session
        fav_ev = rng.random(n_v) < np.minimum(0.5, 0.035 * boost)
        buy = cart & (rng.random(n_v) < 0.5)
        cart_t = view_t + 3.0 + rng.exponential(10.0, size=n_v)
        fav_t = view_t + 2.0 + rng.exponential(6.0, size=n_v)

        s_idx = np.nonzero(has_search)[0]
        s_items = items[first[s_idx]]
        queries = [
            _query(rng, brands[brand_of[i]], h["adj"][i], h["noun"][i], h["variant"][i])
            for i in s_items.tolist()
        ]
        ev_item = np.concatenate([s_items, items, items[cart], items[fav_ev], items[buy]])
        ev_type = np.concatenate(
            [
                np.full(len(s_idx), _CODE["search"]),
                np.full(n_v, _CODE["view"]),
                np.full(int(cart.sum()), _CODE["cart"]),
                np.full(int(fav_ev.sum()), _CODE["favorite"]),
                np.full(int(buy.sum()), _CODE["purchase"]),
            ]
        )
        ev_t = np.concatenate([t0[s_idx], view_t, cart_t[cart], fav_t[fav_ev], end_t[sess[buy]]])
        ev_sess = session_no + np.concatenate([s_idx, sess, sess[cart], sess[fav_ev], sess[buy]])
        ev_query = np.full(len(ev_item), None, dtype=object)
        ev_query[: len(queries)] = queries
        parts.append((np.full(len(ev_item), u), ev_item, ev_type, ev_t, ev_sess, ev_query))
        session_no += n_sess

    user, item, typ, ts, sess_no, query = (np.concatenate(col) for col in zip(*parts, strict=True))
    order = np.argsort(ts, kind="stable")
    events = pd.DataFrame(
        {
            "user": [f"shopper-{x:05d}" for x in user[order].tolist()],
            "item": catalogue["item"].to_numpy()[item[order]],
            "type": np.array(_TYPE_NAMES, dtype=object)[typ[order]],
            "timestamp": np.minimum(ts[order].astype(np.int64), END_TS - 1),
            "query": query[order],
            # Opaque session ids: nothing in them links to the user id.
            "session": [f"sess-{x:07d}" for x in sess_no[order].tolist()],
        }
    )
    events["event_id"] = [f"ev-{k:08d}" for k in range(len(events))]
    truth = None
    if keep_tastes:
        truth = ShopTruth(
            items=catalogue["item"].to_numpy(),
            cat_of=np.asarray(cat_of),
            in_stock=np.asarray(in_stock, dtype=bool),
            affinity=np.vstack(affinities),
            cat_pref=np.vstack(cat_prefs),
        )
    return events, catalogue, truth


def generate_shop_dataset(
    n_items: int = 3000,
    n_users: int = 3000,
    seed: int = 7,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> InteractionDataset:
    """`generate_shop` passed through the privacy gate, as an InteractionDataset.

    Without a gate or pseudonymiser, the loaders' in-memory benchmark key is used (see
    `privrec.data.loaders`).
    """
    events, catalogue = generate_shop(n_items, n_users, seed)
    return dataset_from_raw_events(
        events,
        name=f"demo-shop-{seed}",
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=catalogue,
    )
