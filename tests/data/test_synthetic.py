"""The demo shop generator: reproducible, realistic in shape, and learnable."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from privrec.data.dataset import ITEM_META_COLUMNS
from privrec.data.synthetic import END_TS, SPAN_DAYS, generate_shop
from privrec.data.synthetic_catalogue import STYLE_DIM, brand_names, generate_catalogue
from privrec.events.schema import MIN_TIMESTAMP, max_timestamp


@pytest.fixture(scope="module")
def shop() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_shop()


def test_reproducible_for_a_seed_and_different_across_seeds() -> None:
    a_ev, a_cat = generate_shop(n_items=300, n_users=200, seed=3)
    b_ev, b_cat = generate_shop(n_items=300, n_users=200, seed=3)
    c_ev, _ = generate_shop(n_items=300, n_users=200, seed=4)
    pd.testing.assert_frame_equal(a_ev, b_ev)
    pd.testing.assert_frame_equal(a_cat, b_cat)
    assert not a_ev.equals(c_ev)
    # The catalogue depends only on (n_items, seed).
    pd.testing.assert_frame_equal(generate_shop(n_items=300, n_users=50, seed=3)[1], a_cat)


def test_the_catalogue_generator_is_the_shops_catalogue() -> None:
    # generate_shop draws the catalogue from the first of two streams spawned from the seed
    cat_seq, _ = np.random.SeedSequence(3).spawn(2)
    cat, hidden = generate_catalogue(300, np.random.default_rng(cat_seq))
    pd.testing.assert_frame_equal(cat, generate_shop(n_items=300, n_users=20, seed=3)[1])
    assert hidden["style"].shape == (300, STYLE_DIM)
    assert (np.diff(hidden["cat"]) >= 0).all()  # items grouped by category
    names = brand_names()
    assert [names[b] for b in hidden["brand"]] == cat["brand"].tolist()
    assert int(hidden["n_brands"]) == len(names)


def test_default_size_is_fast() -> None:
    t = time.process_time()
    generate_shop()
    assert time.process_time() - t < 5.0


def test_catalogue_is_readable(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, cat = shop
    assert tuple(cat.columns) == ITEM_META_COLUMNS
    assert len(cat) == 3000 and cat["item"].is_unique and cat["title"].is_unique
    assert cat["category"].str.contains(" > ").all()
    assert cat["category"].nunique() >= 15 and cat["brand"].nunique() >= 20
    assert (cat["price"] > 0).all() and ((cat["price"] * 100).round() % 100 == 99).all()
    assert 0.85 < cat["in_stock"].mean() < 0.99
    first = cat.iloc[0]
    assert first["title"].startswith(first["brand"]) and first["title"] in first["text"]


def test_events_have_the_raw_schema_and_a_funnel(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ev, cat = shop
    assert {"user", "item", "type", "timestamp", "query", "session", "event_id"} <= set(ev.columns)
    assert ev["user"].str.fullmatch(r"shopper-\d{5}").all()
    assert ev["event_id"].is_unique
    assert set(ev["item"]) <= set(cat["item"])
    ts = ev["timestamp"].to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert ts.min() >= END_TS - SPAN_DAYS * 86_400 and ts.max() < END_TS
    assert ts.min() >= MIN_TIMESTAMP and ts.max() <= max_timestamp()
    n = ev["type"].value_counts()
    assert n["view"] > 4 * n["cart"] and n["cart"] > n["favorite"] > n["purchase"] > 0
    searches = ev[ev["type"] == "search"]
    assert len(searches) > 0 and searches["query"].str.len().gt(2).all()
    assert ev.loc[ev["type"] != "search", "query"].isna().all()
    # Out-of-stock items are never bought.
    out = set(cat.loc[~cat["in_stock"], "item"])
    assert not ev.loc[ev["type"] == "purchase", "item"].isin(out).any()
    # Session ids do not contain the user id.
    assert not ev["session"].str.contains("shopper").any()
    # Popularity is skewed: the top 10% of items take far more than 10% of the events.
    counts = ev["item"].value_counts().to_numpy()
    assert counts[: len(counts) // 10].sum() > 0.4 * counts.sum()


def test_searches_describe_the_clicked_item(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ev, cat = shop
    s = ev[ev["type"] == "search"].merge(cat[["item", "title"]], on="item")
    words_found = [
        all(w in t.lower() for w in q.split()) for q, t in zip(s["query"], s["title"], strict=True)
    ]
    assert np.mean(words_found) > 0.95


def test_later_purchases_follow_earlier_browsing(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Purchases in a user's second half share categories with first-half views far above chance."""
    ev, cat = shop
    cat_of = dict(zip(cat["item"], cat["category"], strict=True))
    share = cat["category"].value_counts(normalize=True)
    ev = ev.assign(category=ev["item"].map(cat_of))
    late = ev["timestamp"] >= ev.groupby("user")["timestamp"].transform("median")
    early_views = ev.loc[~late & (ev["type"] == "view"), ["user", "category"]].drop_duplicates()
    late_buys = ev.loc[late & (ev["type"] == "purchase"), ["user", "category"]]
    late_buys = late_buys[late_buys["user"].isin(set(early_views["user"]))]
    hit = late_buys.merge(early_views.assign(seen=True), on=["user", "category"], how="left")[
        "seen"
    ].notna()
    per_user_hit = hit.groupby(late_buys["user"].to_numpy()).mean()
    chance = early_views.assign(p=early_views["category"].map(share)).groupby("user")["p"].sum()
    assert len(per_user_hit) > 300
    assert per_user_hit.mean() > 3 * chance[per_user_hit.index].mean()


def test_item_cooccurrence_beats_popularity(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """A plain item-item cosine model beats popularity on the last 15 days (HR@10 on new items)."""
    ev, cat = shop
    users = {u: k for k, u in enumerate(pd.unique(ev["user"]))}
    items = {it: k for k, it in enumerate(cat["item"])}
    u = ev["user"].map(users).to_numpy()
    i = ev["item"].map(items).to_numpy()
    train = ev["timestamp"].to_numpy() < END_TS - 15 * 86_400
    x = sp.csr_matrix(
        (np.ones(int(train.sum())), (u[train], i[train])), shape=(len(users), len(items))
    )
    x.data[:] = 1.0
    pop = np.asarray(x.sum(axis=0)).ravel()
    xn = x.multiply(1.0 / np.sqrt(np.maximum(pop, 1.0))).tocsc()
    sim = (xn.T @ xn).toarray()
    np.fill_diagonal(sim, 0.0)
    test = pd.DataFrame({"u": u[~train], "i": i[~train]})
    hr: dict[str, list[float]] = {"pop": [], "cf": []}
    for uu, g in test.groupby("u"):
        seen = x[uu].indices
        targets = set(g["i"]) - set(seen.tolist())
        if len(seen) == 0 or not targets:
            continue
        for name, score in (("pop", pop.astype(float)), ("cf", sim[seen].sum(axis=0) + 1e-6 * pop)):
            score = score.copy()
            score[seen] = -np.inf
            top = set(np.argpartition(-score, 10)[:10].tolist())
            hr[name].append(len(targets & top) / min(10, len(targets)))
    assert len(hr["cf"]) > 500
    assert np.mean(hr["cf"]) > 1.8 * np.mean(hr["pop"])


def test_shop_dataset_goes_through_the_gate() -> None:
    from privrec.data.synthetic import generate_shop_dataset

    ev, cat = generate_shop(n_items=200, n_users=100, seed=1)
    ds = generate_shop_dataset(n_items=200, n_users=100, seed=1)
    assert ds.n_events == len(ev) and ds.n_rejects == 0
    assert ds.n_items == len(cat) and ds.n_users == ev["user"].nunique()
    assert all(len(u) == 32 and not u.startswith("shopper") for u in ds.users.keys)
    assert ds.item_meta["title"].notna().all()
